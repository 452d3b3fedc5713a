"""Stage ``route``: send each message to the one team or person able to answer it.

In order: a follow-up goes to its case's assignee when present (otherwise
to the case's team); a customer with an account manager goes straight to
that person; then the ``rules``, first match wins (by recipient, sender or
domain, web-form field, priority, keyword); then the ``default`` team.
Within a team, a person is chosen round-robin or least-loaded among the
members who are present — presence is set with ``mailflow agents set NAME
away|present`` (stored, effective at once) and by each member's optional
``schedule``.

Only the service mailboxes among the envelope recipients (the teams'
local addresses, and those the rules' ``recipient:`` conditions name; see
``mailflow check``) are replaced, by the person's address or the team's
mailbox(es): every other recipient (a colleague or an outside address in
Cc) keeps the message, and mail for no service mailbox is not routed.
Adds ``X-Mailflow-Route`` and, when a person is chosen,
``X-Mailflow-Assignee``; sets route and assignee on the case (recorded at the end of the
chain by the case's owner, ``number``).

A rule naming an unknown team, or an address outside the local domains
without ``external: true`` or ``allow_external``, is refused by ``mailflow
check``, at its ``file:line:column`` (a CSV line for account managers).

Configuration (rules section ``route``)::

    route:
      default: sav
      teams:
        sav:
          addresses: [equipe-sav@example.com]
          members:
            - {address: alice@example.com}
            - {address: bob@example.com, schedule: {monday: ["09:00-12:00"]}}
          strategy: round_robin        # or least_loaded, or none
      rules:
        - name: billing-form
          when: {form_field: {"Catégorie": Facturation}}
          team: billing
        - name: sales
          when: {recipient: [devis@example.com], keyword: ["devis sign*"]}
          team: sales
      account_managers: {"@bigclient.fr": carole@example.com}
      account_managers_file: account-managers.csv   # address-or-@domain,person

Metrics: ``mailflow_routed_total{route}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import partial
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from mailflow import agents, cases
from mailflow.account_managers import load_managers
from mailflow.cases import CaseRow
from mailflow.conditions import CompiledCondition, Condition, lazy_keyword_hits, message_recipients
from mailflow.config import ConfigError, Model, Problem, TimeZoneName
from mailflow.hookspecs import hookimpl
from mailflow.presence import Members, is_present, present_members, take_turn
from mailflow.services import AGENTS, ROUTES, TEAMS, Services
from mailflow.stage import (
    CaseStatus,
    Direction,
    KnownLabels,
    MessageContext,
    ScopePart,
    Stage,
    StageEnv,
    StageOptions,
)
from mailflow.store import Transaction
from mailflow.store.schema import Schema
from mailflow.textmatch import parse_term


class Team(Model):
    addresses: tuple[str, ...]
    members: Members = ()
    strategy: Literal["none", "round_robin", "least_loaded"] = "none"
    external: bool = False  # may its addresses lie outside the local domains?

    @model_validator(mode="after")
    def _addresses(self) -> Team:
        if not self.addresses:
            raise ValueError("a team needs at least one address")
        if self.strategy != "none" and not self.members:
            raise ValueError(f"strategy '{self.strategy}' needs members")
        return self


class RouteRule(Model):
    name: str
    when: Condition
    team: str | None = None
    person: str | None = None

    @model_validator(mode="after")
    def _target(self) -> RouteRule:
        if (self.team is None) == (self.person is None):
            raise ValueError(f"rule '{self.name}' needs exactly one of team or person")
        return self


class RouteOptions(StageOptions):
    default: str
    teams: dict[str, Team]
    rules: tuple[RouteRule, ...] = ()
    account_managers: dict[str, str] = Field(default_factory=dict)
    account_managers_file: str | None = None
    timezone: TimeZoneName | None = None  # unset: the default calendar's (calendars:)
    allow_external: tuple[str, ...] = ()  # addresses outside our domains a rule may name
    #: a colleague's mail to a service mailbox, sent from where agents write: a case with
    #: the colleague as customer (``inbound``), or passed through untouched (``internal``)
    colleague_mail: Literal["inbound", "internal"] = "inbound"


class _CompiledRule(CompiledCondition):
    """A rule with its form-field patterns built once (the shared ``when:`` matcher)."""

    def __init__(self, rule: RouteRule, index: int) -> None:
        super().__init__(rule.when, str(index))  # keyword hits are per rule, even if two
        self.rule = rule                         # share a name


class RouteStage(Stage[RouteOptions]):
    name = "route"
    description = "choose the team or person for each message; rewrite the recipients"
    directions = frozenset({Direction.INBOUND})

    def __init__(self, options: RouteOptions, env: StageEnv) -> None:
        super().__init__(options, env)
        self.zone = (ZoneInfo(options.timezone) if options.timezone
                     else env.calendars.default.zone)
        self._members = tuple(m for team in options.teams.values() for m in team.members)
        self.rules = [_CompiledRule(r, i) for i, r in enumerate(options.rules)]
        # the keywords of every rule in one automaton: one pass over the text per message
        self.keywords = env.terms.matcher([parse_term(k, str(i))
                                           for i, r in enumerate(options.rules)
                                           for k in r.when.keyword])
        self._check(env)
        self._scope = self._our_people(env)
        self.service_mailboxes = frozenset(self._scope.service_mailboxes)
        self.counter = env.metrics.counter("mailflow_routed_total",
                                           "Messages by route chosen", ["route"])

    def _check(self, env: StageEnv) -> None:
        """Mistakes found now, by `mailflow check`, not at 3 a.m.; each at its line."""
        o = self.options
        section = env.rules.section(self.name)
        problems: list[Problem] = []

        def problem(msg: str, *loc: str | int) -> None:
            problems.append(section.problem(msg, loc) if section is not None
                            else Problem(str(env.rules.directory), 0, 0, msg))

        self.managers, manager_at = load_managers(env, o, section, problems)
        teams = ", ".join(sorted(o.teams))
        if o.default not in o.teams:
            problem(f"default team '{o.default}' is not among the teams ({teams})", "default")
        for index, rule in enumerate(o.rules):
            if rule.team is not None and rule.team not in o.teams:
                problem(f"rule '{rule.name}' names unknown team '{rule.team}' (teams: {teams})",
                        "rules", index, "team")
        allowed = {a.lower() for a in o.allow_external}

        def outside(address: str, what: str, external: bool = False) -> str | None:
            if "@" not in address:
                return f"{what}: '{address}' is not an address"
            if not (external or env.rules.is_local(address) or address.lower() in allowed):
                return (f"{what}: '{address}' is outside the local domains "
                        "(add it to allow_external, or external: true on the team)")
            return None

        for name, team in o.teams.items():
            for i, address in enumerate(team.addresses):
                if msg := outside(address, f"team '{name}'", team.external):
                    problem(msg, "teams", name, "addresses", i)
            for i, member in enumerate(team.members):
                if msg := outside(member.address, f"team '{name}' member", team.external):
                    problem(msg, "teams", name, "members", i)
        for index, rule in enumerate(o.rules):
            if rule.person and (msg := outside(rule.person, f"rule '{rule.name}'")):
                problem(msg, "rules", index, "person")
        for customer, person in self.managers.items():
            if msg := outside(person, f"account manager of '{customer}'"):
                problems.append(manager_at[customer](msg))
        if problems:
            raise ConfigError(problems)

    def warnings(self) -> Iterable[Problem]:
        """Addresses that load but route nothing: a ``recipient:`` in no local domain
        (``retours@exemple.com``: its mail never reaches the rule and goes to the default
        team), and a team address no rule leads to (its mail goes to the default team)."""
        o, rules = self.options, self.env.rules
        section = rules.section(self.name)
        if section is None:
            return []
        found: list[Problem] = []
        allowed = {a.lower() for a in o.allow_external}
        for index, rule in enumerate(o.rules):
            for i, address in enumerate(rule.when.recipient):
                if not rules.is_local(address) and address.lower() not in allowed:
                    found.append(section.problem(
                        f"rule '{rule.name}': recipient '{address}' is in no local domain"
                        f" ({', '.join(rules.local_domains)}): no mail to it reaches this"
                        " rule (a typo?)", ("rules", index, "when", "recipient", i)))
        reached = {r.lower() for rule in o.rules for r in rule.when.recipient}
        for name, team in o.teams.items():
            if name == o.default:
                continue
            for i, address in enumerate(team.addresses):
                if rules.is_local(address) and address.lower() not in reached:
                    found.append(section.problem(
                        f"team '{name}': no rule names '{address}' as a recipient: mail"
                        f" to it goes to the default team '{o.default}' (add a rule"
                        f" `when: {{recipient: [{address}]}}`, team: {name})",
                        ("teams", name, "addresses", i)))
        return found

    def _our_people(self, env: StageEnv) -> ScopePart:
        """Service mailboxes (the teams' local addresses, the rules' ``recipient:``),
        the people who answer, and the outside addresses that are ours all the same."""
        o = self.options
        mailboxes: dict[str, str] = {}
        people: dict[str, str] = {}
        insiders = {a.lower() for a in o.allow_external}
        for name, team in o.teams.items():
            mailboxes.update({a.lower(): name for a in team.addresses if env.rules.is_local(a)})
            people.update({m.address.lower(): name for m in team.members})
            if team.external:
                insiders.update(a.lower() for a in (*team.addresses,
                                                    *(m.address for m in team.members)))
        for compiled in self.rules:
            rule = compiled.rule
            mailboxes.update({r: rule.team or rule.name for r in compiled.recipients
                              if env.rules.is_local(r)})
            if rule.person:
                people.setdefault(rule.person.lower(), rule.team or rule.name)
        for person in self.managers.values():
            people.setdefault(person, "account-manager")
        labels = {person: person.partition("@")[0] for person in people}
        labels.update({m.address.lower(): m.agent for team in o.teams.values()
                       for m in team.members})
        return ScopePart(mailboxes, people, frozenset(insiders),
                         colleagues_internal=self.options.colleague_mail == "internal",
                         agent_labels=labels)

    def scope(self) -> ScopePart:
        return self._scope

    def provide(self, services: Services) -> None:
        services.provide(TEAMS, {name: team.addresses
                                 for name, team in self.options.teams.items()}, self.name)
        services.provide(ROUTES, self.route_names(), self.name)
        services.provide(AGENTS, sorted(set(self._scope.agent_labels.values())), self.name)

    def route_names(self) -> list[str]:
        """Every route a case may be given: the teams, a person rule's name, and
        ``account-manager`` when there are account managers."""
        names = dict.fromkeys(self.options.teams)
        names.update(dict.fromkeys(r.name for r in self.options.rules if r.team is None))
        if self.managers:
            names["account-manager"] = None
        return list(names)

    def known_labels(self) -> Iterable[KnownLabels]:
        return [KnownLabels.of("mailflow_routed_total", route=self.route_names())]

    def agent_names(self) -> set[str]:
        """Every name ``mailflow agents set`` may be given (as presence is looked up)."""
        names = {m.agent for team in self.options.teams.values() for m in team.members}
        people = [*self.managers.values(), *(r.person for r in self.options.rules if r.person)]
        return names | {p.partition("@")[0].lower() for p in people}

    # -- choosing ----------------------------------------------------------------

    async def process(self, ctx: MessageContext) -> None:
        assert ctx.store is not None
        # only the service mailboxes are ours to route: every other recipient keeps the
        # message (a colleague in Cc, an outside address, an agent's reply's customer);
        # so is the mailbox the direction found (an expert's reply address whose token
        # failed: customer mail, routed like any other)
        others = [r for r in ctx.recipients
                  if r.lower() not in self.service_mailboxes and r.lower() != ctx.mailbox]
        if len(others) == len(ctx.recipients):
            ctx.note(route=None, because="no service mailbox among the recipients")
            return
        now = dt.datetime.fromtimestamp(ctx.received_at, self.zone)
        away: set[str] | None = None  # read with what needs it, once: a round trip each
        route: str | None = None
        person: str | None = None
        why = ""
        if ctx.case is not None and ctx.case.status is not CaseStatus.NEW:
            row, known_away = await ctx.store.run_read(partial(_case_and_away,
                                                               number=ctx.case.number))
            away = known_away
            route, person, why = self._case_route(row, known_away, now)
        if route is None:
            route, person, why = self._rule_route(ctx)
        team = self.options.teams.get(route)
        if person is None and team is not None and team.strategy != "none":
            person = await self._choose(ctx, route, team, away, now)
        targets = [person] if person else list(team.addresses if team else ())
        ctx.set_recipients([*targets, *others])
        ctx.set_header("X-Mailflow-Route", route)
        if person:
            ctx.set_header("X-Mailflow-Assignee", person)
        if ctx.case is not None:  # the case's owner records it (``CaseSettled``)
            ctx.update_case(route=route, assignee=person)
        self.counter.labels(route=route).inc()
        ctx.note(route=route, assignee=person, because=why, recipients=targets)

    def _case_route(self, row: CaseRow | None, away: set[str], now: dt.datetime,
                    ) -> tuple[str | None, str | None, str]:
        """A follow-up (or copy) stays with its case: the assignee if present, else its team."""
        if row is not None and row.assignee and is_present(row.assignee, self._members, away,
                                                           now):
            return row.route or self.options.default, row.assignee, "case assignee"
        if row is not None and row.route in self.options.teams:
            # assignee away, or none: the case stays with its team (someone present
            # there takes it), whatever address the customer wrote back to
            return row.route, None, "case team"
        return None, None, ""

    def _rule_route(self, ctx: MessageContext) -> tuple[str, str | None, str]:
        """Account manager, then the first matching rule, then the default team."""
        sender = ctx.customer
        manager = self.managers.get(sender) or self.managers.get("@" + sender.rpartition("@")[2])
        if manager:
            return "account-manager", manager, "account manager"
        recipients = message_recipients(ctx)
        keyword_hits = lazy_keyword_hits(self.keywords, ctx)

        for compiled in self.rules:
            if compiled.matches(ctx, recipients, sender, keyword_hits):
                rule = compiled.rule
                return rule.team or rule.name, rule.person, f"rule {rule.name}"
        return self.options.default, None, "default"

    async def _choose(self, ctx: MessageContext, route: str, team: Team,
                      away: set[str] | None, now: dt.datetime) -> str | None:
        assert ctx.store is not None
        loads: dict[str, int] = {}
        if team.strategy == "least_loaded":  # who is present and their loads: one read
            present, loads = await ctx.store.run_read(partial(
                _present_and_loads, members=team.members, away=away, now=now))
        else:
            gone = away if away is not None else await ctx.store.run_read(agents.away_agents)
            present = present_members(team.members, gone, now)
        if not present:
            ctx.note(nobody_present=True)
            return None
        if team.strategy == "least_loaded":
            return min(present, key=lambda p: (loads.get(p, 0), present.index(p)))
        return await take_turn(ctx, f"turn:{route}", present)


def _case_and_away(tx: Transaction, *, number: str) -> tuple[CaseRow | None, set[str]]:
    return cases.get_case(tx, number=number), agents.away_agents(tx)


def _present_and_loads(tx: Transaction, *, members: Members, away: set[str] | None,
                       now: dt.datetime) -> tuple[list[str], dict[str, int]]:
    """The members present, and their open cases (counted only for them: it reads
    every open case of theirs)."""
    present = present_members(members, agents.away_agents(tx) if away is None else away, now)
    return present, agents.open_cases_by_assignee(tx, people=present) if present else {}


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [RouteStage]


@hookimpl
def mailflow_schemas() -> Iterable[Schema]:
    return [cases.SCHEMA, agents.SCHEMA]  # least-loaded counts cases; presence
