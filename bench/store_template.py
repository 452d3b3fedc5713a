"""One day of a customer-service desk, as mailflow stores it: the template the store seeder
(store_seed.py) copies a thousand times over.

A day of distinct customer mail (bench/mailgen.py, 600 messages: about 500 cases) and the
agents' answers to most new cases, a few hours later, from the team's mailbox, are
replayed through the shipped rules (acknowledgement limits raised) on mailflow's own path
(``mailflow.replay``: reception, chain, commit, relay, release; timers fired on the
rules' calendars). Two snapshots are kept:

- ``fresh.sqlite3``: right after the day's last message: its cases open, their SLA timers
  still to fire (the newest day of a seeded store);
- ``settled.sqlite3``: the same, ``SETTLE_DAYS`` later: every timer that was going to fire
  has (a day long past).

Both are cached under ``bench/.cache/`` (git ignores it) by seed and size: building them
takes a minute or so.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import partial
from pathlib import Path
from typing import Any

import mailgen
from procs import REPO
from runs import raised_rules

CACHE = REPO / "bench" / ".cache"
MESSAGES = 600  # one working day at mailgen's pace (08:30 to about 18:30)
ANSWERED = 0.8  # the share of new cases an agent answers the same day
SETTLE_DAYS = 10
VERSION = 1  # bump when what the template holds changes


def folder(seed: int, messages: int, cache: Path = CACHE) -> Path:
    return cache / f"store-template-v{VERSION}-seed{seed}-{messages}"


def build(seed: int = 11, messages: int = MESSAGES, cache: Path = CACHE) -> Path:
    """The cached template folder (``fresh.sqlite3``, ``settled.sqlite3``), built if absent."""
    where = folder(seed, messages, cache)
    if (where / "settled.sqlite3").is_file():
        return where
    work = where.with_name(where.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    asyncio.run(_replay(work, seed, messages))
    for scratch in ("replay", "state"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    shutil.rmtree(where, ignore_errors=True)
    work.rename(where)
    return where


async def _replay(work: Path, seed: int, messages: int) -> None:
    from mailflow.config import load_settings
    from mailflow.logs import configure
    from mailflow.replay.engine import Replay
    from mailflow.rules import load_rules

    configure("warning")
    rules = raised_rules(work)
    settings = load_settings(None, {"rules": str(rules), "state_dir": str(work / "state")})
    items = day(seed, messages, load_rules(settings.rules).is_local)
    async with Replay(settings, work / "replay", items[0].at) as run:
        for index, item in enumerate(items):
            await run.feed(item, index)
        snapshot(run.store, work / "fresh.sqlite3")
        await run.fire_until(items[-1].at + SETTLE_DAYS * 86400)
        snapshot(run.store, work / "settled.sqlite3")


def snapshot(store: Any, target: Path) -> None:
    """A consistent copy of the replay's SQLite store (its WAL included)."""
    path = store.path
    with sqlite3.connect(path) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    copy.close()


def day(seed: int, messages: int, is_local: object) -> list[object]:
    """The day's customer mail and the agents' answers, in the order they arrived."""
    from mailflow.replay.archive import Archived, envelope_of

    rng = random.Random(seed)
    items = []
    for mail in mailgen.Generator(seed, 10240).generate(messages):
        envelope, at = envelope_of(mail.data, is_local)  # type: ignore[arg-type]
        assert at is not None
        items.append(Archived(mail.label.message_id, partial(bytes, mail.data), envelope, at))
        label = mail.label
        if label.ack and rng.random() < ANSWERED:
            when = at + rng.randint(1200, 6 * 3600)
            raw = answer(label, when)
            reply_envelope, _ = envelope_of(raw, is_local, sent=True)  # type: ignore[arg-type]
            items.append(Archived(f"sent-{label.index}", partial(bytes, raw), reply_envelope,
                                  when, True))
    return sorted(items, key=lambda item: item.at)  # type: ignore[attr-defined,no-any-return]


def answer(label: mailgen.Label, when: float) -> bytes:
    """An agent's answer from the mailbox the customer wrote to, in reply to the message."""
    reply = EmailMessage()
    reply["From"] = f"Service client <{label.rcpt_to}>"
    reply["To"] = label.mail_from
    reply["Subject"] = f"Re: {label.subject}"
    reply["Date"] = format_datetime(datetime.fromtimestamp(when, UTC))
    reply["Message-ID"] = make_msgid(domain="example.com")
    reply["In-Reply-To"] = label.message_id
    reply["References"] = label.message_id
    text = ("Bonjour,\n\nNous avons bien pris en compte votre demande et revenons vers vous"
            " sous 48 heures.\n\nCordialement,\nLe service client\n" if label.language == "fr"
            else "Hello,\n\nThank you for your message: we are on it and will come back to"
            " you within two days.\n\nKind regards,\nCustomer service\n")
    reply.set_content(text)
    return reply.as_bytes().replace(b"\n", b"\r\n")
