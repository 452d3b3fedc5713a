"""A small concurrent SMTP load generator for the reliability tests, and the bookkeeping.

``LoadGen`` sends N messages over K parallel aiosmtplib connections (reused
from message to message, like a real MTA). Every message has a unique
Message-ID and a unique body marker. A 4xx, a dropped connection or a timeout
is retried after a short back-off, a bounded number of times and within a
deadline, like a sending MTA; a 250 or a 5xx is final. Each attempt is kept
(reply code or connection error, the queue id in a 250), so the test can tell
afterwards what the client was told.

``analyse`` compares that with what the next hop (the ``sink``) received:
``lost`` = acknowledged with 250 but not at the next hop, ``duplicated`` =
a Message-ID the next hop received more than once.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib

RCPT = "sav@example.com"
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
_HEADER_END = re.compile(rb"\r\n\r\n")


# --------------------------------------------------------------------------- messages


@dataclass
class Attempt:
    code: int | None  # None: the connection failed, dropped or timed out
    text: str
    started: float
    seconds: float


@dataclass
class Mail:
    index: int
    message_id: str  # without angle brackets
    marker: str  # unique text in the body
    sender: str
    rcpt: str
    data: bytes
    attempts: list[Attempt] = field(default_factory=list)
    gave_up: bool = False  # out of attempts or past the deadline while still deferred

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def outcome(self) -> str:
        """'250', '4xx', '5xx' or 'error' (what the client was finally told)."""
        last = self.final
        if last is None or last.code is None:
            return "error"
        return "250" if last.code == 250 else f"{last.code // 100}xx"

    @property
    def accepted(self) -> bool:
        return self.outcome == "250"

    @property
    def queue_id(self) -> str | None:
        """The queue id mailflow gave in its 250."""
        last = self.final
        if last is None or last.code != 250:
            return None
        match = _QUEUED.search(last.text)
        return match.group(1) if match else None


def make_mails(n: int, tag: str, *, subject: Callable[[int], str] | None = None,
               sender: Callable[[int], str] | None = None, rcpt: str = RCPT) -> list[Mail]:
    """``n`` distinct customer messages; every sender is distinct too (one case, one ack)."""
    run = secrets.token_hex(3)
    mails = []
    for i in range(n):
        message_id = f"{tag}-{run}-{i}@loadgen.test"
        marker = f"MARKER-{tag}-{run}-{i:05d}"
        frm = sender(i) if sender else f"client{i}.{run}@customers.test"
        subj = subject(i) if subject else f"Commande {i} en retard"
        data = (f"From: Client {i} <{frm}>\r\nTo: {rcpt}\r\nSubject: {subj}\r\n"
                f"Message-ID: <{message_id}>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0100\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                f"Bonjour,\r\nma commande {i} n'est pas arrivée.\r\n{marker}\r\n"
                "Cordialement\r\n").encode()
        mails.append(Mail(i, message_id, marker, frm, rcpt, data))
    return mails


# --------------------------------------------------------------------------- sending


class LoadGen:
    """Send ``mails`` to 127.0.0.1:``port`` over ``concurrency`` connections, with retries."""

    def __init__(self, port: int, mails: list[Mail], *, concurrency: int = 8,
                 max_attempts: int = 30, retry_delay: float = 0.3, max_retry_delay: float = 2.0,
                 timeout: float = 30.0, deadline: float = 60.0,
                 rate: float | None = None) -> None:
        self.port = port
        self.mails = mails
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout  # per SMTP command: longer than mailflow may take to answer
        self.deadline = deadline  # seconds from the start: no new attempt after it
        self.rate = rate  # first attempts per second at most (None: as fast as it goes)
        self.started = 0.0
        self.finished = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    # -- progress, readable from another thread --------------------------------

    @property
    def done(self) -> int:
        return sum(1 for m in self.mails if self._is_final(m))

    def _is_final(self, mail: Mail) -> bool:
        last = mail.final
        if last is None:
            return False
        if last.code is not None and (last.code == 250 or last.code >= 500):
            return True
        return mail.gave_up

    def wait_progress(self, count: int, timeout: float) -> None:
        """Block until ``count`` messages have a final outcome (or the load ended)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self._done.is_set():
            if self.done >= count:
                return
            time.sleep(0.02)

    # -- running -----------------------------------------------------------------

    def start(self) -> LoadGen:
        """Run in a background thread with its own event loop; ``join`` for the result."""
        def target() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:  # reported by join()
                self._error = exc
            finally:
                self._done.set()
        self._thread = threading.Thread(target=target, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> list[Mail]:
        assert self._thread is not None
        self._thread.join(timeout if timeout is not None else self.deadline + self.timeout * 3)
        if self._thread.is_alive():
            raise TimeoutError("the load generator did not finish in time")
        if self._error is not None:
            raise self._error
        return self.mails

    async def run(self) -> list[Mail]:
        self.started = time.monotonic()
        queue: asyncio.Queue[Mail | None] = asyncio.Queue()
        pending = len(self.mails)
        all_done = asyncio.Event()
        loop = asyncio.get_running_loop()
        if not self.mails:
            return self.mails

        def finish(mail: Mail, final: bool) -> None:
            nonlocal pending
            if not final:
                delay = min(self.max_retry_delay,
                            self.retry_delay * 1.5 ** (len(mail.attempts) - 1))
                if (len(mail.attempts) < self.max_attempts
                        and time.monotonic() + delay < self.started + self.deadline):
                    loop.call_later(delay, queue.put_nowait, mail)
                    return
                mail.gave_up = True
            pending -= 1
            if pending == 0:
                all_done.set()

        async def feed() -> None:
            for i, mail in enumerate(self.mails):
                if self.rate:
                    wait = self.started + i / self.rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                queue.put_nowait(mail)

        async def worker() -> None:
            client: aiosmtplib.SMTP | None = None
            try:
                while True:
                    mail = await queue.get()
                    if mail is None:
                        return
                    client, attempt = await self._attempt(client, mail)
                    mail.attempts.append(attempt)
                    code = attempt.code
                    finish(mail, code is not None and (code == 250 or code >= 500))
            finally:
                if client is not None:
                    client.close()

        feeder = loop.create_task(feed())
        workers = [loop.create_task(worker()) for _ in range(self.concurrency)]
        await all_done.wait()
        await feeder
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        self.finished = time.monotonic()
        return self.mails

    async def _attempt(self, client: aiosmtplib.SMTP | None,
                       mail: Mail) -> tuple[aiosmtplib.SMTP | None, Attempt]:
        started = time.monotonic()

        def result(code: int | None, text: str) -> Attempt:
            return Attempt(code, text, started - self.started, time.monotonic() - started)

        try:
            if client is None or not client.is_connected:
                if client is not None:
                    client.close()
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port,
                                         timeout=self.timeout, start_tls=False,
                                         local_hostname="loadgen.test")
                await client.connect()
                await client.ehlo()
            try:
                await client.mail(mail.sender)
                await client.rcpt(mail.rcpt)
                response = await client.data(mail.data)
            except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused,
                    aiosmtplib.SMTPDataError) as exc:
                if exc.code == 421:  # the server is closing the session
                    client.close()
                    client = None
                else:
                    try:
                        await client.rset()
                    except (aiosmtplib.SMTPException, OSError):
                        client.close()
                        client = None
                return client, result(exc.code, exc.message)
            return client, result(response.code, response.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if client is not None:
                client.close()
            code = getattr(exc, "code", None)
            if isinstance(code, int) and 400 <= code < 600 and code != 421:
                return None, result(code, str(exc))
            return None, result(None, f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- next hop


@dataclass
class Copy:
    """One message as the next hop received it."""

    mail_from: str
    rcpt_tos: list[str]
    message_id: str | None
    queue_id: str | None  # from mailflow's Received header
    headers: dict[str, str]  # the first of each name, lower-case names
    data: bytes

    @property
    def is_ack(self) -> bool:
        return (self.mail_from in ("", "<>")
                and self.headers.get("auto-submitted", "").lower() == "auto-replied")


_RECEIVED_ID = re.compile(rb"\(mailflow\) with \S+ id ([0-9A-Za-z]+)")


def parse_copy(mail_from: str, rcpt_tos: list[str], data: bytes) -> Copy:
    match = _HEADER_END.search(data)
    head = data[:match.start()] if match else data
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head).decode("utf-8", "replace")
    headers: dict[str, str] = {}
    for line in unfolded.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.lower() not in headers:
            headers[name.strip().lower()] = value.strip()
    mid = headers.get("message-id", "").strip().strip("<>") or None
    qid = _RECEIVED_ID.search(head)
    return Copy(mail_from, list(rcpt_tos), mid, qid.group(1).decode() if qid else None,
                headers, data)


def copies(received: Iterable[Any]) -> list[Copy]:
    """The sink's messages (conftest ``Received``) as parsed copies (kept if already)."""
    return [r if isinstance(r, Copy) else parse_copy(r.mail_from, r.rcpt_tos, r.data)
            for r in received]


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    scenario: str
    sent: int  # distinct messages offered
    attempts: int  # SMTP transactions, retries included
    accepted: int  # final 250
    final_4xx: int
    final_5xx: int
    final_error: int
    delivered: int  # accepted and at the next hop
    lost: int  # accepted and NOT at the next hop
    duplicated: int  # Message-IDs at the next hop more than once
    extra_copies: int  # copies beyond the first, all Message-IDs
    unacknowledged_but_delivered: int  # at the next hop without a final 250 (RFC 1047)
    corrupted: int  # a copy without its body marker
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.notes.items() if not isinstance(v, list))
        return (f"[{self.scenario}] sent={self.sent} attempts={self.attempts} "
                f"250={self.accepted} 4xx={self.final_4xx} 5xx={self.final_5xx} "
                f"err={self.final_error} delivered={self.delivered} lost={self.lost} "
                f"duplicated={self.duplicated} delivered_without_250="
                f"{self.unacknowledged_but_delivered} seconds={self.seconds:.1f}{extra}")


def analyse(scenario: str, mails: list[Mail], received: Iterable[Any], seconds: float,
            **notes: Any) -> tuple[Figures, dict[str, list[Copy]]]:
    """Figures, and the customer copies at the next hop by Message-ID."""
    by_mid: dict[str, list[Copy]] = defaultdict(list)
    for c in copies(received):
        if not c.is_ack and c.message_id:
            by_mid[c.message_id].append(c)
    outcomes = Counter(m.outcome for m in mails)
    accepted = [m for m in mails if m.accepted]
    delivered = sum(1 for m in accepted if by_mid.get(m.message_id))
    ours = {m.message_id: m for m in mails}
    dup = sum(1 for mid, cs in by_mid.items() if mid in ours and len(cs) > 1)
    extra = sum(len(cs) - 1 for mid, cs in by_mid.items() if mid in ours and len(cs) > 1)
    without = sum(1 for m in mails if not m.accepted and by_mid.get(m.message_id))
    corrupted = sum(1 for m in mails for c in by_mid.get(m.message_id, [])
                    if m.marker.encode() not in c.data or not c.data.endswith(m.data))
    figures = Figures(scenario, len(mails), sum(len(m.attempts) for m in mails),
                      outcomes["250"], outcomes["4xx"], outcomes["5xx"], outcomes["error"],
                      delivered, len(accepted) - delivered, dup, extra, without, corrupted,
                      round(seconds, 2), dict(notes))
    return figures, by_mid


def report(figures: Figures, path: Path) -> None:
    """Print the one-line summary (``pytest -s``) and append the figures to ``path``."""
    print(figures.line(), flush=True)
    data: list[dict[str, Any]] = []
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    data.append(asdict(figures))
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
