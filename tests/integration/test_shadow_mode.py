"""Shadow mode in the real daemon, with a real next hop (the sink), over a fake week.

``mode: shadow``: the whole chain runs on live traffic, and what a sender or recipient
sees does not change: the next hop gets every message as passthrough relays it (the
bytes as received, to the recipients as received) and nothing else, no acknowledgement,
no reminder, no SLA notice; a plugin's SMTP refusal (the example blocklist) is recorded,
not applied. What mailflow would have done goes to the shadow store, which
``mailflow report --shadow`` and ``mailflow cases --shadow`` read.

The week (Paris, shipped calendar and rules, SLA 2 business hours): Monday 30 November
2026 at 9:00 Claire asks in French and John in English; a sender on the blocklist writes;
Claire's out-of-office answers; Alice (an agent, from a trusted address) answers Claire
at 10:00. Nobody answers John: his deadline is 11:00, warned at 10:30.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clirunner import run_cli
from conftest import REPO, Daemon, Sink, full_chain_rules, metric

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PARIS = ZoneInfo("Europe/Paris")
MONDAY = dt.datetime(2026, 11, 30, 9, 0, tzinfo=PARIS).timestamp()
SLA = {"priorities": {p: {"first_response": "2bh", "update": "2bh", "warn_before": "30m"}
                      for p in ("urgent", "high", "normal", "low")}}
BLOCKLIST = {"senders": ["@blocked.test"], "quarantine_subjects": []}


def mail(sender: str, to: str, subject: str, mid: str, body: str, extra: str = "") -> bytes:
    return (f"From: <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 30 Nov 2026 09:00:00 +0100\r\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


#: (envelope sender, recipients, message): what the week brings, in order
TRAFFIC = [
    ("claire@client.test", ["sav@example.com"],
     mail("claire@client.test", "sav@example.com", "Commande 4821", "c1@client.test",
          "Bonjour,\r\nma commande 4821 n'est pas arrivée. Pouvez-vous m'aider ?")),
    ("john@client.test", ["sav@example.com"],
     mail("john@client.test", "sav@example.com", "Order 7731", "j1@client.test",
          "Hello,\r\nmy order 7731 has not arrived. Could you help me?")),
    ("offers@blocked.test", ["sav@example.com"],
     mail("offers@blocked.test", "sav@example.com", "Great offer", "o1@blocked.test",
          "Buy now.")),
    ("claire@client.test", ["alice.moreau@example.com"],
     mail("claire@client.test", "alice.moreau@example.com", "Absente : Commande 4821",
          "c2@client.test", "Je suis absente jusqu'au 4 décembre.",
          "Auto-Submitted: auto-replied\r\n")),
    ("alice.moreau@example.com", ["claire@client.test"],
     mail("alice.moreau@example.com", "claire@client.test", "Re: Commande 4821",
          "a1@example.com", "Bonjour Claire, votre commande part demain.",
          "In-Reply-To: <c1@client.test>\r\nReferences: <c1@client.test>\r\n")),
]


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_until(db: Path, sql: str, expected: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(db, sql) == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{sql}: {query(db, sql)} instead of {expected}")


@pytest.fixture
def shadow(daemon_factory: Any, tmp_path: Path) -> Daemon:
    if "blocklist" not in {ep.name for ep in entry_points(group="mailflow.plugins")}:
        pytest.fail("the example plugin is not installed (make test installs it)")
    rules = full_chain_rules(tmp_path / "rules-src", sla=SLA, blocklist=BLOCKLIST)
    d: Daemon = daemon_factory(config={"mode": "shadow", "plugins": ["blocklist"],
                                       "trusted_networks": ["127.0.0.0/8"]},
                               rules=rules, test_clock=MONDAY)
    return d


def test_a_week_in_shadow_changes_nothing_and_records_what_would_have_been(
        shadow: Daemon, sink: Sink) -> None:
    d = shadow
    shadow_db = Path(d.config["state_dir"]) / "mailflow-shadow.sqlite3"
    for minutes, (sender, rcpts, data) in zip((0, 1, 2, 5, 60), TRAFFIC, strict=True):
        d.set_time(MONDAY + minutes * 60)
        code, text = d.send(data, mail_from=sender, rcpt_to=rcpts)
        assert code == 250, (sender, text)  # the blocklisted sender too: recorded, not refused
    got = sink.wait_for(len(TRAFFIC))

    # the next hop got every message as received, to its recipients, and nothing else
    assert [(m.mail_from, m.rcpt_tos, m.data) for m in got] == TRAFFIC
    wait_until(shadow_db, "SELECT count(*) FROM messages", [(len(TRAFFIC),)])

    # the shadow store: two cases, the acknowledgements captured
    cases = query(shadow_db, "SELECT customer FROM cases ORDER BY customer")
    assert cases == [("claire@client.test",), ("john@client.test",)]
    wait_until(shadow_db, "SELECT kind, rcpt_to, state FROM outbox ORDER BY rcpt_to",
               [("ack", '["claire@client.test"]', "sent"),
                ("ack", '["john@client.test"]', "sent")])
    assert query(shadow_db, "SELECT state, verdict FROM messages"
                 " WHERE message_id LIKE '%o1@blocked.test%'") == [("shadow-refused", "deliver")]

    # the week goes by: John's warning at 10:30, his breach at 11:00, all captured (the
    # clock stops between the two: a warning still due once its breach fired is not sent)
    d.set_time(MONDAY + 100 * 60)  # 10:40
    wait_until(shadow_db, "SELECT kind FROM outbox WHERE kind LIKE 'sla%' AND state = 'sent'",
               [("sla-warning",)])
    for day in range(6):
        d.set_time(MONDAY + day * 86400 + 9 * 3600)  # 18:00 each day
        time.sleep(0.6)  # the scheduler polls every 0.2 s
    wait_until(shadow_db, "SELECT kind FROM outbox WHERE kind LIKE 'sla%' AND state = 'sent'"
               " ORDER BY kind", [("sla-breach",), ("sla-warning",)])
    d.settle()
    assert len(sink.messages) == len(TRAFFIC)
    assert not Path(d.db).exists() or query(d.db, "SELECT count(*) FROM cases") == [(0,)]
    assert metric(d, "mailflow_mode_info", mode="shadow") == 1

    config = str(d.config_path)
    since = f"{int((time.time() - MONDAY) // 86400) + 2}d"
    report = run_cli("report", "--shadow", "--since", since, "--config", config, cwd=REPO)
    assert report.returncode == 0, report.stderr
    lines = [" ".join(line.split()) for line in report.stdout.splitlines()]
    assert "first responses: 1 (median 1 h 00 min, p90 1 h 00 min)" in lines, report.stdout
    assert "SLA breaches: 1" in lines, report.stdout
    assert "acknowledgements 2" in lines, report.stdout
    assert "SLA breach notices 1" in lines and "SLA warnings 1" in lines, report.stdout
    assert "refused during SMTP 1" in lines and "deliver 4" in lines, report.stdout

    listed = run_cli("cases", "list", "--shadow", "--config", config, cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    assert "claire@client.test" in listed.stdout and "john@client.test" in listed.stdout
    live = run_cli("cases", "list", "--config", config, cwd=REPO)
    assert "claire@client.test" not in live.stdout

    # switching to live carries nothing over: Claire's next mail opens a live case of its
    # own, acknowledged for real, and the shadow store stays as it was
    d.stop()
    d.config["mode"] = "live"
    d.start()
    sink.reset()
    d.set_time(MONDAY + 7 * 86400 + 9 * 3600)
    follow_up = mail("claire@client.test", "sav@example.com", "Re: Commande 4821",
                     "c3@client.test", "Toujours rien reçu.",
                     "In-Reply-To: <c1@client.test>\r\n")
    assert d.send(follow_up, mail_from="claire@client.test")[0] == 250
    received = sink.wait_for(2)
    (ack,) = [m for m in received if m.rcpt_tos == ["claire@client.test"]]
    ((live_case,),) = query(d.db, "SELECT number FROM cases WHERE customer ="
                            " 'claire@client.test'")
    ((shadow_case,),) = query(shadow_db, "SELECT number FROM cases WHERE customer ="
                              " 'claire@client.test'")
    assert live_case != shadow_case and f"[{live_case}]".encode() in ack.data
    assert query(shadow_db, "SELECT count(*) FROM messages") == [(len(TRAFFIC),)]
    assert metric(d, "mailflow_mode_info", mode="live") == 1
