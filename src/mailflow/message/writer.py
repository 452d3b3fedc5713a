"""The one writer of the mail mailflow sends itself: acknowledgements, notices, forwards.

Two kinds of mail, two profiles (RFC 3834, and what mail clients honour):

- ``AUTOMATIC``: a notice nobody is meant to answer (an acknowledgement, an SLA
  warning, a reminder, a plugin's digest). ``Auto-Submitted: auto-replied`` when it
  answers a message (``replying``: a letter built with ``answering(message)``),
  ``auto-generated`` otherwise;
  ``X-Auto-Response-Suppress: All`` and ``Precedence: bulk`` so that no
  out-of-office answers it.
- ``TO_ANSWER``: mail a person is meant to answer (a forward to an expert): no
  ``Auto-Submitted`` (their answer would be taken for a robot's), and only
  ``X-Auto-Response-Suppress: OOF`` (their out-of-office is what must not come back).

Both carry the loop marker (``X-Mailflow-Loop``: a message carrying it is never
acknowledged), a ``Message-ID`` on the daemon's host name, a ``Date`` and CRLF line
ends; threading fields and addresses are written raw (:mod:`mailflow.message.compose`),
and a non-ASCII address or identifier makes the header UTF-8 (sent with SMTPUTF8).
Every stage and every plugin writes through here: no block of such headers anywhere
else.
"""

from __future__ import annotations

import binascii
import email
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from enum import Enum
from typing import TYPE_CHECKING, Any

from mailflow.message import compose
from mailflow.message.compose import MAX_LINE
from mailflow.values import OutgoingMail

if TYPE_CHECKING:
    from mailflow.message import Message


class Profile(Enum):
    """Who the mail is for: nobody to answer it, or a person who will."""

    AUTOMATIC = "automatic"
    TO_ANSWER = "to-answer"


AUTOMATIC = Profile.AUTOMATIC
TO_ANSWER = Profile.TO_ANSWER


@dataclass(frozen=True)
class Letter:
    """What to write. ``to``: addresses, or (name, address) pairs. An answer to a message
    names it in ``in_reply_to`` and gives its ``References`` chain (Message-IDs without
    brackets): ``**answering(message)`` fills both."""

    sender: str
    to: Sequence[str | tuple[str, str]]
    subject: str
    body: str
    sender_name: str = ""
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    #: more header fields (an internal ``X-Mailflow-Case`` on mail to colleagues)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: a message attached whole (``message/rfc822``), as received
    attached: bytes | None = None
    #: it answers a message (RFC 3834's ``auto-replied``), whether it names it or not
    replying: bool = False
    #: ``Auto-Submitted`` when the profile's is not the right one (a reminder a person is
    #: meant to answer, yet written by a robot: ``auto-generated``)
    auto_submitted: str | None = None


@dataclass(frozen=True)
class Written:
    """The mail, ready for the outbox, and its Message-ID (without brackets)."""

    mail: OutgoingMail
    message_id: str


def answering(message: Message) -> dict[str, Any]:
    """``in_reply_to`` and ``references`` of a letter answering ``message`` (its
    References, else its one In-Reply-To: RFC 5322 3.6.4)."""
    chain = message.message_ids("References")
    if not chain:
        parent = message.message_ids("In-Reply-To")
        chain = parent if len(parent) == 1 else []
    return {"in_reply_to": message.message_id or None, "references": tuple(chain),
            "replying": True}


def set_text(mail: EmailMessage, text: str) -> None:
    """``mail.set_content(text)``, faster: the same bytes where the text goes as it is
    (7bit, 8bit), and quoted-printable by binascii where it has lines too long for that
    (the email package's encoder is pure Python: a third of the time of writing an
    acknowledgement). Text that base64 makes shorter (not Latin) goes the email
    package's way."""
    lines = text.encode("utf-8").splitlines()
    body = b"\n".join(lines) + b"\n"
    if mail.policy.cte_type != "8bit":
        mail.set_content(text)
        return
    if max(map(len, lines), default=0) <= (mail.policy.max_line_length or MAX_LINE):
        cte = "7bit" if body.isascii() else "8bit"
        payload = body.decode("ascii", "surrogateescape")
    else:
        encoded = binascii.b2a_qp(body, istext=True)
        if len(encoded) > len(body) * 4 // 3:
            mail.set_content(text)
            return
        cte, payload = "quoted-printable", encoded.decode("ascii")
    mail["Content-Type"] = 'text/plain; charset="utf-8"'
    mail["Content-Transfer-Encoding"] = cte
    mail["MIME-Version"] = "1.0"
    mail.set_payload(payload)


class MailWriter:
    """Writes for one daemon: its host name goes into every Message-ID and loop marker."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def write(self, letter: Letter, *, kind: str, profile: Profile = AUTOMATIC,
              now: float, mail_from: str = "", id_prefix: str = "") -> Written:
        """``letter`` as the bytes the outbox sends (``kind``: the outbox's and the metrics'
        name for it; ``mail_from``: the envelope sender, null by default: no robot
        answers a null sender)."""
        thread = (compose.thread_fields(letter.in_reply_to, letter.references)
                  if letter.in_reply_to else [])
        pairs = [(t, "") if isinstance(t, str) else (t[1], t[0]) for t in letter.to]
        utf8 = not all(a.isascii() for a, _ in pairs) or not all(
            v.isascii() for _, v in thread)
        message_id = f"{id_prefix or kind}.{secrets.token_hex(6)}@{self.hostname}"
        mail = EmailMessage(policy=compose.writer_policy(utf8=utf8))
        mail["From"] = formataddr((letter.sender_name, letter.sender))
        mail["To"] = ", ".join(compose.address_field(name, address, utf8=utf8)
                               for address, name in pairs)
        if letter.reply_to:
            mail["Reply-To"] = letter.reply_to
        mail["Subject"] = " ".join(letter.subject.split())
        mail["Date"] = formatdate(now, localtime=True)
        mail["Message-ID"] = f"<{message_id}>"
        for name, value in thread:
            mail[name] = value
        if profile is AUTOMATIC:
            mail["Auto-Submitted"] = letter.auto_submitted or (
                "auto-replied" if letter.replying else "auto-generated")
            mail["X-Auto-Response-Suppress"] = "All"
            mail["Precedence"] = "bulk"
        else:
            if letter.auto_submitted:
                mail["Auto-Submitted"] = letter.auto_submitted
            mail["X-Auto-Response-Suppress"] = "OOF"
        mail[compose.LOOP_HEADER] = self.hostname
        for name, value in letter.headers.items():
            mail[name] = value
        set_text(mail, letter.body)
        if letter.attached is not None:
            mail.add_attachment(email.message_from_bytes(letter.attached,
                                                         policy=compose.policy(utf8=False)))
        recipients = tuple(address for address, _ in pairs)
        return Written(OutgoingMail(kind, recipients, mail.as_bytes(), mail_from=mail_from),
                       message_id)
