"""Which way a message flows: decided once, before the chain.

mailflow sees all of a company's mail, but only the service's part is its
business. In this order:

1. ``reply``, an expert's answer: mail to a per-forward reply address
   (``experts+<case>.<token>@``, see :mod:`mailflow.escalation.tokens`) whose
   token the store knows and has not expired, from any network (a valid token
   is proof enough), automatic or not (the ``escalate`` stage records an
   expert's out-of-office without taking it for an answer). ``decide`` stays
   pure: the caller looks the tokens up first (:func:`reply_tokens`, then
   ``escalation.tokens.verified``) and passes the valid ones; with a wrong or
   expired token, the reply address is a service mailbox like any other: the
   message is inbound (a case, routing, an acknowledgement).
2. ``reply``: one of ours (an agent or team member the rules know, by
   envelope sender or From; ``From: sav@`` is a reply of that team) writing
   from where agents write: a trusted network (the original client, as
   XFORWARD tells) or the submission listener. Automatic mail (an agent's
   out-of-office: the message's facts say) is never a reply. The ``replies``
   stage then joins its case; a reply that matches none is passed through.
3. ``inbound``: any other message with a service mailbox among its
   recipients, whatever the network.
4. ``internal``: from a local-domain sender to local recipients only.
5. ``passthrough``: everything else: relayed as received, no case, no
   acknowledgement, addresses neither stored nor logged.

Who is ours comes from the stages (route's teams and members, through
:meth:`mailflow.stage.Stage.scope`). Rules that declare no service mailbox
at all keep the older behaviour: all mail for a local domain is inbound.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from mailflow.facts import MessageFacts
from mailflow.message import Message
from mailflow.values import Direction

#: the directions the chain runs for; the others are relayed as received
SERVICE_DIRECTIONS = frozenset({Direction.INBOUND, Direction.REPLY})
#: Postfix's ``smtpd_sasl_authenticated_header = yes`` writes this in its Received header.
_AUTHENTICATED = re.compile(r"\(Authenticated sender:\s*([^)\s]+)\s*\)", re.IGNORECASE)
#: the part after the ``+`` of a reply address: ``<case>.<token>``
_TOKEN_SUFFIX = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)\.([a-z0-9]{16,64})", re.IGNORECASE)
#: (case number, token) named by a reply address
Token = tuple[str, str]


def new_token() -> str:
    """96 random bits, lower-case hex: survives MTAs that fold the local part's case."""
    return secrets.token_hex(12)


def reply_address(base: str, case: str, token: str) -> str:
    """``experts@example.com`` → ``experts+CASE.token@example.com``."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{case}.{token}@{domain}"


def reply_base(local_part: str, domain: str | None, local_domains: Iterable[str]) -> str:
    """``experts@example.com``: the base of a stage's reply addresses, on ``domain`` or the
    first of the local domains."""
    domain = domain or next(iter(local_domains), "")
    if not domain:
        raise ValueError("reply_domain is needed when there are no local_domains")
    return f"{local_part}@{domain.lower()}"


def check_local_part(value: str) -> str:
    """A reply address's local part (before ``+<case>.<token>``), lower case."""
    if not value or any(c in value for c in "+@ \t"):
        raise ValueError(f"'{value}' is not a local part (no '+', '@' or spaces)")
    return value.lower()


def tokens_to(message: Message, bases: Collection[str]) -> list[Token]:
    """The (case, token) pairs the envelope recipients name on ``bases``, in order."""
    found = (token_address(r, bases) for r in message.envelope.rcpt_to)
    return list(dict.fromkeys(t for t in found if t is not None))


def token_address(address: str, bases: Collection[str]) -> Token | None:
    """``experts+CASE.TOKEN@example.com`` → ``("CASE", "token")`` when ``experts@example.com``
    is among ``bases`` (lower-case); None for any other address. Only the shape is
    checked here: whether the token is real is the store's to say."""
    local, at, domain = address.strip().rpartition("@")
    base, plus, suffix = local.partition("+")
    if not (at and plus) or f"{base}@{domain}".lower() not in bases:
        return None
    found = _TOKEN_SUFFIX.fullmatch(suffix)
    return (found.group(1).upper(), found.group(2).lower()) if found else None


@dataclass(frozen=True)
class ScopePart:
    """What one stage knows of who is ours (see :meth:`mailflow.stage.Stage.scope`)."""

    #: address -> team: the mailboxes the service answers for
    service_mailboxes: Mapping[str, str] = field(default_factory=dict)
    #: address -> team: the people who answer (a team's members, account managers)
    agents: Mapping[str, str] = field(default_factory=dict)
    #: addresses outside the local domains that are ours all the same (an outsourced team)
    insiders: frozenset[str] = frozenset()
    #: base addresses (``experts@example.com``) whose ``+CASE.TOKEN`` forms are reply addresses
    reply_addresses: frozenset[str] = frozenset()
    #: a colleague's mail to a service mailbox is no customer's (route's ``colleague_mail``)
    colleagues_internal: bool = False
    #: address -> the agent's name in the rules: the only agent names statistics show
    agent_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """Whose mail is the service's: built with the chain, at each load of the rules."""

    local_domains: frozenset[str]
    service_mailboxes: Mapping[str, str] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)
    insiders: frozenset[str] = frozenset()
    reply_addresses: frozenset[str] = frozenset()
    colleagues_internal: bool = False
    agent_labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, local_domains: Iterable[str], parts: Iterable[ScopePart]) -> Scope:
        mailboxes: dict[str, str] = {}
        agents: dict[str, str] = {}
        labels: dict[str, str] = {}
        insiders: set[str] = set()
        bases: set[str] = set()
        colleagues_internal = False
        for part in parts:
            colleagues_internal |= part.colleagues_internal
            mailboxes.update({k.lower(): v for k, v in part.service_mailboxes.items()})
            agents.update({k.lower(): v for k, v in part.agents.items()})
            labels.update({k.lower(): v for k, v in part.agent_labels.items()})
            insiders.update(a.lower() for a in part.insiders)
            bases.update(a.lower() for a in part.reply_addresses)
        return cls(frozenset(d.lower().rstrip(".") for d in local_domains), mailboxes, agents,
                   frozenset(insiders), frozenset(bases), colleagues_internal, labels)

    def agent_label(self, address: str | None) -> str:
        """The rules' name of the agent at ``address``; ``other`` for anyone else (a
        metric label never holds an address from the internet)."""
        return self.agent_labels.get((address or "").lower(), "other")

    def is_local(self, address: str) -> bool:
        _, at, domain = address.rpartition("@")
        return bool(at) and domain.lower().rstrip(".") in self.local_domains

    def is_inside(self, address: str) -> bool:
        """May this recipient see our routing headers? Our domains, and our own outsiders."""
        return self.is_local(address) or address.lower() in self.insiders

    def is_service_mailbox(self, address: str) -> bool:
        if not self.service_mailboxes:  # none declared: every local address is the service's
            return self.is_local(address)
        return address.lower() in self.service_mailboxes or self.is_reply_address(address)

    def is_reply_address(self, address: str) -> bool:
        """A reply base (``experts@``) or any ``+`` form of it, whatever its token: mail
        to one is the service's (an unverified token makes it customer mail)."""
        if not self.reply_addresses:
            return False
        local, at, domain = address.rpartition("@")
        return bool(at) and f"{local.partition('+')[0]}@{domain}".lower() in self.reply_addresses

    def agent_by_login(self, login: str) -> str | None:
        """The agent behind an authenticated login (a full address, or its local part)."""
        login = login.lower()
        if login in self.agents:
            return login
        matches = [a for a in self.agents if a.partition("@")[0] == login]
        return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True)
class Source:
    """Where a message comes from, as far as direction is concerned."""

    trusted: bool  # the original client is in the trusted networks
    submission: bool = False  # it came through the submission listener (authenticated)

    @property
    def agents_write_from_here(self) -> bool:
        return self.trusted or self.submission


@dataclass(frozen=True)
class Judgement:
    """The direction, why, and for a reply who wrote it."""

    direction: Direction
    reason: str
    agent: str | None = None
    team: str | None = None
    mailbox: str = ""  # inbound: the service mailbox written to


def _login(message: Message) -> str | None:
    """The login Postfix's submission service recorded in the newest Received header."""
    for value in message.get_all("Received")[:1]:
        found = _AUTHENTICATED.search(value)
        if found:
            return found.group(1)
    return None


def _reply_author(message: Message, scope: Scope) -> tuple[str, str] | None:
    """(agent, team) when the sender is one of ours, else None."""
    sender = message.envelope.mail_from.lower()
    authors = [a.lower() for a in message.addresses("From")]
    author = authors[0] if authors else ""
    for candidate in (sender, author):
        if candidate and candidate in scope.agents:
            return candidate, scope.agents[candidate]
    if author and author in scope.service_mailboxes:
        # an agent writing as the shared mailbox: the agent is the envelope sender's,
        # or the authenticated login's; else the team itself answered
        login = _login(message)
        agent = scope.agent_by_login(login) if login else None
        return agent or author, scope.service_mailboxes[author]
    return None


def reply_tokens(message: Message, scope: Scope) -> list[Token]:
    """The (case, token) pairs the envelope recipients name through a reply address: the
    ones the caller asks the store about before :func:`decide`."""
    return tokens_to(message, scope.reply_addresses) if scope.reply_addresses else []


def decide(message: Message, scope: Scope, source: Source,
           valid_tokens: Collection[Token] = (), *,
           facts: MessageFacts | None = None) -> Judgement:
    """The direction of ``message``, in the order described above; ``valid_tokens``: the
    reply-address tokens the store confirmed (an expert's answer, from any network);
    ``facts``: the message's facts, whether it is automatic among them (an agent's
    out-of-office is no reply; the shipped signs judge when none are given)."""
    envelope = message.envelope
    for token in reply_tokens(message, scope) if valid_tokens else ():
        if token in valid_tokens:
            authors = message.addresses("From")
            expert = (envelope.mail_from or (authors[0] if authors else "")).lower()
            return Judgement(Direction.REPLY, f"to the reply address of case {token[0]}"
                             " (valid token: an expert's answer)", expert or None, "experts")
    if source.agents_write_from_here and envelope.mail_from:
        author = _reply_author(message, scope)
        if author is not None:
            if facts is None:
                from mailflow.automatic import SHIPPED

                facts = MessageFacts(message, SHIPPED)
            if facts.automatic is None:
                agent, team = author
                return Judgement(Direction.REPLY, f"from {agent} (team {team})", agent, team)
    local_sender = bool(envelope.mail_from) and scope.is_local(envelope.mail_from)
    if (scope.colleagues_internal and local_sender and source.agents_write_from_here
            and any(scope.is_service_mailbox(r) for r in envelope.rcpt_to)):
        # from outside, a local sender proves nothing: that mail stays customer mail
        if all(scope.is_local(r) for r in envelope.rcpt_to):
            return Judgement(Direction.INTERNAL, "a colleague's mail to a service mailbox"
                             " (route.colleague_mail: internal)")
        return Judgement(Direction.PASSTHROUGH, "a colleague's mail to a service mailbox and"
                         " outside recipients (route.colleague_mail: internal)")
    for rcpt in envelope.rcpt_to:
        if scope.is_service_mailbox(rcpt):
            mailbox = rcpt.lower()
            why = (f"for reply address {mailbox} with no valid token: customer mail"
                   if mailbox not in scope.service_mailboxes and scope.is_reply_address(rcpt)
                   else f"for service mailbox {mailbox}")
            return Judgement(Direction.INBOUND, why, mailbox=mailbox)
    if local_sender and all(scope.is_local(r) for r in envelope.rcpt_to):
        return Judgement(Direction.INTERNAL, "local sender, local recipients only")
    return Judgement(Direction.PASSTHROUGH, "no service mailbox among the recipients")


def split_recipients(recipients: Iterable[str], inside: Callable[[str], bool],
                     ) -> tuple[list[str], list[str]]:
    """(inside, outside): who may see our routing headers, and who may not."""
    ins: list[str] = []
    outs: list[str] = []
    for rcpt in recipients:
        (ins if inside(rcpt) else outs).append(rcpt)
    return ins, outs
