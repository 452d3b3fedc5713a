"""The mail of an escalation: the forward to the expert, the reminders, the supervisor's notice.

All of it comes from the service mailbox with the forward's own reply address
in ``Reply-To`` (so whatever the expert's client does to the Subject, the
answer joins its case), ``X-Auto-Response-Suppress: OOF`` and the loop marker;
reminders and notices are ``Auto-Submitted: auto-generated``. The first line
of every body says how to answer.
"""

from __future__ import annotations

import email
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from mailflow.message import compose


@dataclass(frozen=True)
class Letterhead:
    """Who writes, from where, about which case."""

    case: str
    sender: str
    sender_name: str
    reply_to: str
    host: str


def _how_to_answer(head: Letterhead, to_customer: bool) -> str:
    goes = "au client" if to_customer else "à l'équipe qui traite le dossier"
    goes_en = "to the customer" if to_customer else "to the team handling the case"
    return (f"Pour répondre, répondez simplement à ce message : votre réponse rejoint le"
            f" dossier {head.case} et va {goes}.\n"
            f"To answer, just reply to this message: your answer joins case {head.case}"
            f" and goes {goes_en}.\n")


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.strip().splitlines()) + "\n"


def _base(head: Letterhead, to: Sequence[str], subject: str, now: float,
          kind: str) -> tuple[EmailMessage, str]:
    message_id = f"{kind}.{head.case}.{secrets.token_hex(4)}@{head.host}"
    mail = EmailMessage(policy=compose.policy(utf8=False))
    mail["From"] = formataddr((head.sender_name, head.sender))
    mail["To"] = ", ".join(to)
    mail["Reply-To"] = head.reply_to
    mail["Subject"] = subject
    mail["Date"] = formatdate(now, localtime=True)
    mail["Message-ID"] = f"<{message_id}>"
    mail["X-Auto-Response-Suppress"] = "OOF"
    # the case is in the Subject: no X-Mailflow-Case, an expert may be outside the company
    mail[compose.LOOP_HEADER] = head.host
    return mail, message_id


def forward(head: Letterhead, to: Sequence[str], *, subject: str, original: bytes,
            rule: str, now: float, to_customer: bool = False) -> tuple[bytes, str]:
    """(bytes, Message-ID) of the forward, the customer's message attached whole."""
    mail, message_id = _base(head, to, f"[{head.case}] Avis demandé : {subject}", now, "esc")
    mail.set_content(f"{_how_to_answer(head, to_customer)}\n"
                     f"Le message du client est joint (dossier {head.case}, règle {rule}).\n"
                     f"The customer's message is attached.\n")
    mail.add_attachment(email.message_from_bytes(original, policy=compose.policy(utf8=False)))
    return mail.as_bytes(), message_id


def reminder(head: Letterhead, to: Sequence[str], *, subject: str, forward_id: str,
             number: int, total: int, since: str, excerpt: str, now: float,
             to_customer: bool = False) -> bytes:
    """The ``number``-th of ``total`` reminders to the expert, threaded under the forward."""
    mail, _ = _base(head, to, f"[{head.case}] Relance {number}/{total} : {subject}", now, "rem")
    mail["Auto-Submitted"] = "auto-generated"
    mail["In-Reply-To"] = f"<{forward_id}>"
    mail["References"] = f"<{forward_id}>"
    mail.set_content(f"{_how_to_answer(head, to_customer)}\n"
                     f"Le dossier {head.case} attend votre avis depuis le {since}"
                     f" (relance {number}/{total}).\n\n{_quoted(excerpt)}")
    return mail.as_bytes()


def supervisor_notice(head: Letterhead, to: Sequence[str], *, subject: str, experts: str,
                      since: str, reminders: int, excerpt: str, now: float) -> bytes:
    """The supervisor's notice: the expert has not answered after every reminder."""
    mail, _ = _base(head, to, f"[{head.case}] Escalade : pas de réponse de {experts}",
                    now, "sup")
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(f"{_how_to_answer(head, False)}\n"
                     f"{experts} n'a pas répondu sur le dossier {head.case} ({subject}),"
                     f" transmis le {since}, après {reminders} relance(s).\n"
                     f"No answer from {experts} on case {head.case} after {reminders}"
                     f" reminder(s).\n\n{_quoted(excerpt)}")
    return mail.as_bytes()
