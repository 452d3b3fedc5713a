"""Customer-service traffic over SMTP for the metrics tests: customers from outside,
agents' replies from the trusted network, a duplicate, a refused recipient, an expert's
forward, reminder and answer through the daemon's test clock; and what goes wrong: a
stage that fails (tests/fixtures/plugin_dir's ``fixture_explode``), an acknowledgement
the next hop refuses for a while, a configuration reload.

The daemon trusts 127.0.0.1 only (:data:`TRUSTED`) and runs the shipped rules, whole
chain; the outside is 127.0.0.2, a loopback address of its own (Linux answers on all of
127.0.0.0/8): customers and the lawyer write from there.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from conftest import (
    FULL_CHAIN,
    NULL_SENDERS,
    REPO,
    Daemon,
    Received,
    Sink,
    full_chain_rules,
    metric,
    parse_email,
)
from rawsmtp import RawClient

PARIS = ZoneInfo("Europe/Paris")
FIXTURES = REPO / "tests" / "fixtures"
NOTICE = (Path(__file__).parent / "data" / "legal_notice.eml").read_bytes()
LAWYER = "maitre.durand@example.com"
SUPERVISOR = "chef-service@example.com"  # rules/sla.yaml
REPLY_TO = re.compile(r"experts\+[A-Z0-9-]+\.[0-9a-f]{24}@example\.com")
TRUSTED = ["127.0.0.1/32"]  # the daemon's trusted_networks
OUTSIDE = "127.0.0.2"


class ClientFrom(RawClient):
    """A raw SMTP client whose connection leaves from ``source`` (a loopback address)."""

    def __init__(self, port: int, source: str, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""


#: a Subject that makes ``fixture_explode`` raise (see :func:`traffic_rules`)
EXPLODE = "EXPLODE-TEST"


def traffic_rules(folder: Path) -> Path:
    """The shipped rules, whole chain, with a stage that fails on :data:`EXPLODE`."""
    return full_chain_rules(folder, FULL_CHAIN.replace("]", ", fixture_explode]"),
                            fixture_explode={"when_subject": EXPLODE})


def traffic_config() -> dict[str, object]:
    return {"trusted_networks": TRUSTED, "plugin_dirs": [str(FIXTURES / "plugin_dir")]}


def wait_metric(d: Daemon, above: float, name: str, timeout: float = 15.0,
                **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while metric(d, name, **labels) <= above:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} stayed at {above}")
        time.sleep(0.1)


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp()


def mail(sender: str, to: str, subject: str, mid: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n{extra}\r\nBonjour,\r\n"
            "une question sur ma commande.\r\n").encode()


def transaction(d: Daemon, mail_from: str, rcpts: list[str], data: bytes,
                outside: bool = True) -> tuple[int, bytes]:
    """One transaction; the first refused RCPT's reply, else DATA's."""
    client = ClientFrom(d.port, OUTSIDE if outside else "127.0.0.1")
    try:
        client.greet(b"mx.client.test")
        code, text = client.cmd(f"MAIL FROM:<{mail_from}>".encode())
        assert code == 250, text
        for rcpt in rcpts:
            code, text = client.cmd(f"RCPT TO:<{rcpt}>".encode())
            if code != 250:
                return code, text
        code, text = client.cmd(b"DATA")
        assert code == 354, text
        data = re.sub(rb"\r?\n", b"\r\n", data)
        data += b"" if data.endswith(b"\r\n") else b"\r\n"
        client.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        return client.reply()
    finally:
        client.close()


Found = Callable[[list[Received]], list[Received]]


def wait_until(sink: Sink, found: Found, timeout: float = 15.0) -> list[Received]:
    """Wait until ``found(messages)`` returns a non-empty list; that list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = found(sink.messages)
        if got:
            return list(got)
        time.sleep(0.05)
    raise AssertionError(f"not at the next hop within {timeout}s: {found}")


def customer_case(d: Daemon, sink: Sink, customer: str, mailbox: str, mid: str,
                  subject: str = "Ma commande") -> str:
    """A customer writes from outside; the agent the case went to."""
    code, text = transaction(d, customer, [mailbox], mail(customer, mailbox, subject, mid))
    assert code == 250, text
    relayed = wait_until(sink, lambda ms: [m for m in ms if m.mail_from == customer
                                           and f"<{mid}>".encode() in m.data])
    return relayed[-1].rcpt_tos[0]


def agent_reply(d: Daemon, sink: Sink, agent: str, customer: str, mid: str,
                in_reply_to: str) -> None:
    """The agent answers from the trusted network, joining the case by In-Reply-To."""
    before = len(sink.messages)
    data = mail(agent, customer, "Re: Ma commande", mid,
                f"In-Reply-To: <{in_reply_to}>\r\nReferences: <{in_reply_to}>\r\n")
    code, text = transaction(d, agent, [customer], data, outside=False)
    assert code == 250, text
    sink.wait_for(before + 1)


def round_of_mail(d: Daemon, sink: Sink, n: int, base: float,
                  scraped: Callable[[], None] = lambda: None) -> None:
    """Everything the dashboard shows, once, on the test clock from ``base`` (a Monday to
    Thursday, 10:00 in Paris): the daemon's day continues until the next day 13:00.
    ``scraped`` is called between an agent's two answers (for a Prometheus to see the
    agent's series before and after the second)."""
    d.set_time(base)
    customer = f"claire.{n}@client.test"
    agent = customer_case(d, sink, customer, "sav@example.com", f"q-{n}@client.test")
    # the same message again (a resend), and mail for elsewhere refused (no open relay)
    code, text = transaction(d, customer, ["sav@example.com"],
                             mail(customer, "sav@example.com", "Ma commande",
                                  f"q-{n}@client.test"))
    assert code == 250, text
    code, text = transaction(d, customer, ["friend@elsewhere.test"],
                             mail(customer, "friend@elsewhere.test", "Salut", f"x-{n}@c.test"))
    assert 500 <= code < 600, (code, text)
    # a stage failing: the message tempfailed
    code, text = transaction(d, customer, ["sav@example.com"],
                             mail(customer, "sav@example.com", f"{EXPLODE} {n}",
                                  f"boom-{n}@client.test"))
    assert 400 <= code < 500, (code, text)
    # the next hop refuses an acknowledgement for a while: retried from the outbox
    refused = f"busy.{n}@client.test"
    failures = metric(d, "mailflow_outbox_failures_total", outcome="retry")
    sink.handler.rcpt_replies[refused] = "450 4.2.0 Mailbox busy"
    customer_case(d, sink, refused, "sav@example.com", f"b-{n}@client.test")
    wait_metric(d, failures, "mailflow_outbox_failures_total", outcome="retry")
    del sink.handler.rcpt_replies[refused]
    # the rules reloaded
    reloads = metric(d, "mailflow_config_reloads_total")
    d.signal(signal.SIGHUP)
    wait_metric(d, reloads, "mailflow_config_reloads_total")
    # a case left unanswered: warned, then breached the next day
    customer_case(d, sink, f"marc.{n}@client.test", "support@example.com",
                  f"s-{n}@client.test", "Help")
    # a legal notice, forwarded to the lawyer
    notice_from = "service.juridique@union-conso.test"
    notice = NOTICE.replace(b"<notice-1@union-conso.test>",
                            f"<notice-{n}@union-conso.test>".encode())
    code, text = transaction(d, notice_from, ["contact@example.com"], notice)
    assert code == 250, text
    forward = wait_until(sink, lambda ms: [m for m in ms if LAWYER in m.rcpt_tos
                                           and f"notice-{n}@".encode() in m.data])[0]
    assert forward.mail_from in NULL_SENDERS
    reply_to = str(parse_email(forward.data)["Reply-To"])
    assert REPLY_TO.fullmatch(reply_to), reply_to
    # the agent answers 10 minutes later; the customer writes back; answered 200 s later
    d.set_time(base + 600)
    agent_reply(d, sink, agent, customer, f"a-{n}@example.com", f"q-{n}@client.test")
    scraped()
    d.set_time(base + 700)
    code, text = transaction(d, customer, ["sav@example.com"],
                             mail(customer, "sav@example.com", "Re: Ma commande",
                                  f"q2-{n}@client.test",
                                  f"In-Reply-To: <a-{n}@example.com>\r\n"
                                  f"References: <q-{n}@client.test> <a-{n}@example.com>\r\n"))
    assert code == 250, text
    d.set_time(base + 900)
    agent_reply(d, sink, agent, customer, f"a2-{n}@example.com", f"q2-{n}@client.test")
    # 4 business hours later (15:00): the lawyer is reminded, and answers at 15:30
    reminders = len([m for m in sink.messages if LAWYER in m.rcpt_tos])
    d.set_time(base + 5 * 3600)
    wait_until(sink, lambda ms: [m for m in ms if LAWYER in m.rcpt_tos][reminders:])
    d.set_time(base + 5 * 3600 + 1800)
    lawyer = "durand.avocat@cabinet-durand.test"
    code, text = transaction(d, lawyer, [reply_to],
                             mail(lawyer, reply_to, "Mon avis", f"avis-{n}@cabinet-durand.test"))
    assert code == 250, text
    # the next day, 13:00: the support case passed its deadline (12:00, warned at 11:00),
    # the supervisor is told
    told = len([m for m in sink.messages if SUPERVISOR in m.rcpt_tos])
    d.set_time(base + 27 * 3600)
    wait_until(sink, lambda ms: [m for m in ms if SUPERVISOR in m.rcpt_tos][told:])
    d.settle()
