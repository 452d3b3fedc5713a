"""What SMTP-stage hooks see of a client, and how they answer it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailflow.xforward import Forwarded


@dataclass(frozen=True)
class SmtpReply:
    """An SMTP reply a hook or stage chooses: 4xx tempfails, 5xx rejects."""

    code: int
    text: str
    status: str = ""  # enhanced status code, e.g. 5.7.1

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise ValueError("a hook may only answer 4xx or 5xx; return None to accept")
        if any(c in self.text + self.status for c in "\r\n\0"):  # no second reply line
            raise ValueError("an SMTP reply is one line")

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        status = self.status or f"{self.code // 100}.0.0"
        return f"{self.code} {status} {self.text}"


@dataclass
class SessionInfo:
    """One SMTP client connection, as plugins see it.

    ``peer``, ``helo`` and ``trusted`` are the original client's: behind Postfix,
    what its XFORWARD said (``via`` is then the MTA that connected, and
    ``relay_trusted`` whether that one is trusted: relay control is its own).
    """

    peer: str
    port: int = 0
    helo: str = ""
    tls: bool = False
    trusted: bool = False
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)
    greeted: bool = False
    refusal: str | None = None  # set when the connect hook refused the client
    relay_trusted: bool = False  # the connecting client is in the trusted networks
    via: str = ""  # the connecting client's address
    via_helo: str = ""
    submission: bool = False  # on the submission listener: authenticated agents' mail
    forwarded: Forwarded | None = None
    #: shadow mode: what the plugins' SMTP hooks would have answered (not applied)
    shadow_refusals: list[str] = field(default_factory=list)

    def forward(self, told: Forwarded,
                networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> None:
        """Take what a trusted MTA said of its client (XFORWARD)."""
        self.forwarded = told
        self.peer = told.addr or self.via
        self.helo = told.helo or self.via_helo
        self.trusted = self.in_networks(self.peer, networks) if told.addr else \
            self.relay_trusted

    def end_transaction(self) -> None:
        """What XFORWARD said holds for one transaction: the next one is told again."""
        self.mail_from, self.rcpt_to = None, []
        self.shadow_refusals = [r for r in self.shadow_refusals
                                if r.startswith(("mailflow_connect", "mailflow_helo"))]
        if self.forwarded is not None:
            self.forwarded = None
            self.peer, self.helo, self.trusted = self.via, self.via_helo, self.relay_trusted

    @staticmethod
    def in_networks(peer: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
                    ) -> bool:
        """True when ``peer`` is an address inside one of ``networks``."""
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in networks)
