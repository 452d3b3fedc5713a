"""A third-party stage named ``route`` replaces the built-in one, and the rest of the chain
keeps working: stages meet through the scope, services and case events, not imports.

The replacement (a plugin file dropped in ``plugin_dirs``) sends every service mailbox
to one team, declares that team's mailbox and agents (``scope()``) and provides the
``TEAMS`` service; it knows nothing of the other stages. Through the real daemon, with
the whole shipped chain otherwise: the customer's message is routed by it, numbered,
acknowledged and escalated to the lawyer (an escalation rule on its route); the case
records its route; the lawyer's answer goes to the team it provides; an agent it
declares answers the case, which is recorded as the first response.
"""

from __future__ import annotations

import re
import smtplib
import sqlite3
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import Daemon, Sink, full_chain_rules, parse_email

pytestmark = pytest.mark.slow

OUTSIDE = "127.0.0.2"  # customers and the lawyer; the daemon trusts 127.0.0.1 only
LAWYER = "maitre.durand@example.com"

OWN_ROUTE = '''\
"""A team's own router: every service mailbox to one team."""

from mailflow.hookspecs import hookimpl
from mailflow.services import TEAMS
from mailflow.stage import Direction, ScopePart, Stage, StageOptions


class OneTeamOptions(StageOptions):
    team: str
    address: str
    mailboxes: list[str]
    agents: list[str] = []


class OneTeam(Stage[OneTeamOptions]):
    name = "route"
    description = "every service mailbox to one team"
    directions = frozenset({Direction.INBOUND})

    def scope(self):
        o = self.options
        return ScopePart(service_mailboxes={m: o.team for m in o.mailboxes},
                         agents={a: o.team for a in o.agents})

    def provide(self, services):
        services.provide(TEAMS, {self.options.team: (self.options.address,)}, self.name)

    async def process(self, ctx):
        mine = {m.lower() for m in self.options.mailboxes}
        others = [r for r in ctx.recipients if r.lower() not in mine]
        ctx.set_recipients([self.options.address, *others])
        ctx.set_header("X-Mailflow-Route", self.options.team)
        if ctx.case is not None:
            ctx.update_case(route=self.options.team, assignee=None)


@hookimpl
def mailflow_stages():
    return [OneTeam]
'''


def customer_mail(mid: str, subject: str, body: str, *, to: str = "sav@example.com",
                  sender: str = "claire@client.test", extra: str = "") -> bytes:
    return (f"From: Claire <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n").encode()


def send(d: Daemon, data: bytes, mail_from: str, rcpt: str, source: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30, source_address=(source, 0)) as client:
        client.ehlo("client.test")
        client.mail(mail_from)
        code, text = client.rcpt(rcpt)
        assert code == 250, text
        return client.data(data)


@pytest.fixture
def daemon(tmp_path: Path, sink: Sink) -> Daemon:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "one_team.py").write_text(OWN_ROUTE, encoding="utf-8")
    rules = full_chain_rules(tmp_path / "rules", escalate={"rules": [{
        "name": "legal-notice", "when": {"route": ["support"], "keyword": ["mise en demeure"]},
        "group": "legal-experts", "remind_after": "4bh", "reminders": 1}]})
    yaml = YAML()
    with open(rules / "route.yaml", "w", encoding="utf-8") as fh:
        yaml.dump({"route": {"team": "support", "address": "equipe@example.com",
                             "mailboxes": ["sav@example.com"],
                             "agents": ["alice@example.com"]}}, fh)
    d = Daemon(tmp_path / "d", f"smtp://127.0.0.1:{sink.port}",
               {"plugin_dirs": [str(plugins)], "trusted_networks": ["127.0.0.1/32"]},
               rules=rules)
    d.start()
    yield d
    d.stop()


def test_a_third_party_route_and_the_rest_of_the_chain(daemon: Daemon, sink: Sink) -> None:
    d = daemon
    code, text = send(d, customer_mail("q1@client.test", "Mise en demeure",
                                       "Je vous mets en demeure de me rembourser."),
                      "claire@client.test", "sav@example.com", OUTSIDE)
    assert code == 250, text
    d.settle()
    got = {m.rcpt_tos[0]: m for m in sink.wait_for(3)}
    routed = parse_email(got["equipe@example.com"].data)
    assert routed["X-Mailflow-Route"] == "support"  # the third party's decision
    case = routed["X-Mailflow-Case"]
    assert case and routed["X-Mailflow-Priority"]  # number and prioritise ran around it
    ack = parse_email(got["claire@client.test"].data)
    assert ack["Auto-Submitted"] == "auto-replied" and case in ack["Subject"]
    forward = parse_email(got[LAWYER].data)  # escalate matched on the third party's route
    reply_to = forward["Reply-To"]
    assert re.fullmatch(rf"experts\+{re.escape(case)}\.[a-z0-9]+@example\.com", reply_to)
    with sqlite3.connect(d.db) as db:
        assert db.execute("SELECT route FROM cases WHERE number = ?",
                          (case,)).fetchone() == ("support",)

    # the lawyer answers from outside: to the team the replacement provides (TEAMS)
    sink.reset()
    forwarded = forward["Message-ID"].strip("<>")
    answer = customer_mail("l1@example.com", f"Re: [{case}] Mise en demeure", "Conseil.",
                           sender=LAWYER, to=reply_to,
                           extra=f"In-Reply-To: <{forwarded}>\r\n")
    assert send(d, answer, LAWYER, reply_to, OUTSIDE)[0] == 250
    (relayed,) = sink.wait_for(1)
    assert relayed.rcpt_tos == ["equipe@example.com"]

    # an agent the replacement declares answers the customer from the office network
    sink.reset()
    reply = customer_mail("a1@example.com", "Re: Mise en demeure", "Nous remboursons.",
                          sender="alice@example.com", to="claire@client.test",
                          extra="In-Reply-To: <q1@client.test>\r\n")
    assert send(d, reply, "alice@example.com", "claire@client.test", "127.0.0.1")[0] == 250
    sink.wait_for(1)
    with sqlite3.connect(d.db) as db:
        roles = [r for (r,) in db.execute("SELECT role FROM case_messages WHERE case_number = ?"
                                          " ORDER BY id", (case,))]
        met = db.execute("SELECT met_at FROM sla_deadlines WHERE case_number = ?",
                         (case,)).fetchone()
    assert roles[0] == "customer" and "expert" in roles and roles[-1] == "agent"
    assert met is not None and met[0] is not None  # sla heard the answer (CaseAnswered)
