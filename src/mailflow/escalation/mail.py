"""The mail of an escalation: the forward to the expert, the reminders, the supervisor's notice.

All of it comes from the service mailbox with the forward's own reply address
in ``Reply-To`` (so whatever the expert's client does to the Subject, the
answer joins its case), ``X-Auto-Response-Suppress: OOF`` and the loop marker;
reminders and notices are ``Auto-Submitted: auto-generated``. The first line
of every body says how to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailflow.message.writer import TO_ANSWER, Letter, MailWriter, Written


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


def _letter(head: Letterhead, to: Sequence[str], subject: str, body: str,
            **more: Any) -> Letter:
    # the case is in the Subject: no X-Mailflow-Case, an expert may be outside the company
    return Letter(head.sender, to, subject, body, sender_name=head.sender_name,
                  reply_to=head.reply_to, **more)


def forward(head: Letterhead, to: Sequence[str], *, subject: str, original: bytes,
            rule: str, now: float, to_customer: bool = False) -> Written:
    """The forward (with its Message-ID), the customer's message attached whole."""
    body = (f"{_how_to_answer(head, to_customer)}\n"
            f"Le message du client est joint (dossier {head.case}, règle {rule}).\n"
            f"The customer's message is attached.\n")
    return MailWriter(head.host).write(
        _letter(head, to, f"[{head.case}] Avis demandé : {subject}", body, attached=original),
        kind="escalation", profile=TO_ANSWER, now=now, id_prefix=f"esc.{head.case}")


def reminder(head: Letterhead, to: Sequence[str], *, subject: str, forward_id: str,
             number: int, total: int, since: str, excerpt: str, now: float,
             to_customer: bool = False) -> Written:
    """The ``number``-th of ``total`` reminders to the expert, threaded under the forward."""
    body = (f"{_how_to_answer(head, to_customer)}\n"
            f"Le dossier {head.case} attend votre avis depuis le {since}"
            f" (relance {number}/{total}).\n\n{_quoted(excerpt)}")
    return MailWriter(head.host).write(
        _letter(head, to, f"[{head.case}] Relance {number}/{total} : {subject}", body,
                in_reply_to=forward_id, references=(), auto_submitted="auto-generated"),
        kind="escalation-reminder", profile=TO_ANSWER, now=now, id_prefix=f"rem.{head.case}")


def supervisor_notice(head: Letterhead, to: Sequence[str], *, subject: str, experts: str,
                      since: str, reminders: int, excerpt: str, now: float) -> Written:
    """The supervisor's notice: the expert has not answered after every reminder."""
    body = (f"{_how_to_answer(head, False)}\n"
            f"{experts} n'a pas répondu sur le dossier {head.case} ({subject}),"
            f" transmis le {since}, après {reminders} relance(s).\n"
            f"No answer from {experts} on case {head.case} after {reminders}"
            f" reminder(s).\n\n{_quoted(excerpt)}")
    return MailWriter(head.host).write(
        _letter(head, to, f"[{head.case}] Escalade : pas de réponse de {experts}", body,
                auto_submitted="auto-generated"),
        kind="escalation-supervisor", profile=TO_ANSWER, now=now,
        id_prefix=f"sup.{head.case}")
