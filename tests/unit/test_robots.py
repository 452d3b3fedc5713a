"""What real robots look like (mailflow.automatic, its detector's verdict): each class of
automatic mail that carries no Auto-Submitted, and the people who must still get an
answer. The messages are written here after the real ones in ../shared/realmail."""

from __future__ import annotations

import pytest

from mailflow.automatic import SHIPPED, SUBJECT_MARKERS, AutomaticDetector, AutomaticRules
from mailflow.message import Envelope, Message, parse_message


def message(head: str, body: str = "Bonjour,\r\nune question.\r\n", *,
            mail_from: str = "someone@client.test") -> Message:
    raw = f"{head}Message-ID: <m1@client.test>\r\n\r\n{body}".encode()
    return parse_message(raw, Envelope(mail_from=mail_from, rcpt_to=("sav@example.com",)))


def why(msg: Message, robots: AutomaticDetector = SHIPPED) -> str | None:
    found = robots.judge(msg)
    return found.why if found else None


PERSON = "From: Claire Martin <claire@client.test>\r\nTo: sav@example.com\r\n"


@pytest.mark.parametrize(("head", "reason"), [
    # iCloud vacation reply: a vendor header, "Auto reply:", no Auto-Submitted
    ("From: k@icloud.test\r\nSubject: Auto reply: Nyaan\r\nX-Apple-Action: VACATION\r\n",
     "auto-reply marker (X-Apple-Action: VACATION)"),
    # Lotus Domino, known by its subject only
    ("From: John.Smith@b.test\r\nSubject: AUTO: Smith, John is out of the office. "
     "(returning 05/01/2010)\r\n", "out-of-office (subject: AUTO:)"),
    # Exchange out-of-office replies in the shipped languages, subject only
    ("From: a@b.test\r\nSubject: Automatic reply: your order\r\n",
     "out-of-office (subject: automatic reply)"),
    ("From: a@b.test\r\nSubject: Réponse automatique : votre commande\r\n",
     "out-of-office (subject: reponse automatique)"),
    ("From: a@b.test\r\nSubject: Abwesenheitsnotiz: Ihre Bestellung\r\n",
     "out-of-office (subject: abwesenheitsnotiz)"),
    ("From: a@b.test\r\nSubject: Respuesta automática: su pedido\r\n",
     "out-of-office (subject: respuesta automatica)"),
    ("From: a@b.test\r\nSubject: Risposta automatica: ordine\r\n",
     "out-of-office (subject: risposta automatica)"),
    ("From: a@b.test\r\nSubject: Automatisch antwoord: bestelling\r\n",
     "out-of-office (subject: automatisch antwoord)"),
    ("From: a@b.test\r\nSubject: [Out of Office] back on Monday\r\n",
     "out-of-office (subject: out of office)"),
    ("From: a@b.test\r\nSubject: Jean Dupont is out of the office\r\n",
     "out-of-office (subject: is out of the office)"),
    ("From: a@b.test\r\nSubject: Arpus biroja atrasanas automatiska atbilde: x\r\n",
     "out-of-office (subject: arpus biroja)"),
    ("From: a@b.test\r\nSubject: Undeliverable: your order\r\n",
     "delivery report (subject: undeliverable)"),
    # a challenge-response robot: its vendor header
    ("From: exampleuser@bluebottle.test\r\nSubject: RE: BLAH\r\nX-Bluebottle-Request: <1>\r\n",
     "auto-reply marker (X-Bluebottle-Request)"),
    # other helpdesks and trackers
    ("From: a@b.test\r\nSubject: Testmail\r\nX-OTOBO-Loop: yes\r\n",
     "auto-reply marker (X-OTOBO-Loop)"),
    ("From: a@b.test\r\nSubject: x\r\nX-OTRS-Loop: yes\r\n", "auto-reply marker (X-OTRS-Loop)"),
    ('From: "Jesse Vincent via RT" <rt@rt.test>\r\nSubject: [rt.test #33575] Resolved: x\r\n',
     "robot name in From (Jesse Vincent via RT)"),
    ("From: rt@rt.test\r\nSubject: [rt.test #33575] Resolved: x\r\nRT-Ticket: rt.test #33575\r\n",
     "auto-reply marker (RT-Ticket)"),
    ("From: staff@hotmail.test\r\nSubject: complaint\r\nX-HmXmrOriginalRecipient: a@b.test\r\n",
     "auto-reply marker (X-HmXmrOriginalRecipient)"),
    # Hotmail's feedback loop (JMRP): its address, its subject
    ("From: staff@hotmail.com\r\nSubject: x\r\nContent-Type: message/rfc822\r\n",
     "robot sender (staff@hotmail.com)"),
    ("From: a@b.test\r\nSubject: complaint about message from 192.0.2.1\r\n",
     "feedback report (subject: complaint about message from)"),
    ("From: a@b.test\r\nSubject: x\r\nX-Failed-Recipients: c@d.test\r\n",
     "auto-reply marker (X-Failed-Recipients)"),
    # a Return-Path kept in the message is a hop before's envelope: with a second sign only
    ("From: a@b.test\r\nSubject: Mail could not be delivered\r\nReturn-Path: <>\r\n",
     "delivery report (subject “could not be delivered”; Return-Path: <>)"),
    # robots' addresses and names in the From, whatever the envelope says
    ("From: post_master@vtext.test\r\nSubject: Re:Test message\r\n",
     "robot sender (post_master)"),
    ("From: Gmail Team <gmail-noreply@google.test>\r\nSubject: Welcome\r\n",
     "robot sender (gmail-noreply)"),
    ("From: Google Alerts <newsalerts-noreply@google.test>\r\nSubject: Google Alert - x\r\n",
     "robot sender (newsalerts-noreply)"),
    ("From: MAILER-DAEMON <>\r\nSubject: failure\r\n", "From names no address"),
    ("From: Mail Delivery System <mx@b.test>\r\nSubject: x\r\n",
     "robot name in From (Mail Delivery System)"),
    ("From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@b.test>\r\n"
     "Subject: x\r\n", "robot sender (microsoftexchange329e71ec88ae4615bbc36ab6ce41109e)"),
])
def test_robots_without_auto_submitted(head: str, reason: str) -> None:
    assert why(message(head)) == reason


def test_reports_by_content_type() -> None:
    """A bare delivery report with no From, a bounce as multipart/mixed with its status
    part, an abuse report of RFC 5965."""
    bare = message("Content-Type: message/delivery-status\r\n",
                   "Reporting-MTA: dns; mx.b.test\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\n"
                   "Action: failed\r\nStatus: 5.1.1\r\n")
    assert why(bare) == "delivery report (message/delivery-status)"
    mixed = message('From: a@b.test\r\nContent-Type: multipart/mixed; boundary="B"\r\n',
                    "--B\r\nContent-Type: text/plain\r\n\r\nnot delivered\r\n"
                    "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
                    "Reporting-MTA: dns; mx.b.test\r\n--B--\r\n")
    assert why(mixed) == "delivery report (multipart/mixed with message/delivery-status)"
    abuse = message('From: a@b.test\r\nContent-Type: multipart/report; '
                    'report-type=feedback-report; boundary="B"\r\n',
                    "--B\r\nContent-Type: text/plain\r\n\r\ncomplaint\r\n"
                    "--B\r\nContent-Type: message/feedback-report\r\n\r\n"
                    "Feedback-Type: abuse\r\n--B--\r\n")
    assert why(abuse) == "feedback report (multipart/report; report-type=feedback-report)"
    forwarded = message(PERSON + 'Subject: what is this?\r\n'
                        'Content-Type: multipart/mixed; boundary="B"\r\n',
                        "--B\r\nContent-Type: text/plain\r\n\r\nI got this bounce\r\n"
                        "--B\r\nContent-Type: message/rfc822\r\n\r\n"
                        "Content-Type: multipart/report; boundary=C\r\n\r\n--C--\r\n--B--\r\n")
    assert why(forwarded) is None  # a person asking about a bounce is a person


@pytest.mark.parametrize("subject", [
    "Absence de réponse à ma réclamation",  # "absence" is not "absence du bureau"
    "Re: Automatic reply received instead of an answer",  # a person answering a robot
    "Auto insurance question", "Assenteismo e malattia", "Mon auto: panne", "Out of stock",
    "Ausentismo laboral", "Undelivered parcel: where is it?", "Commande 1234 non reçue",
])
def test_people_writing_about_such_things_are_people(subject: str) -> None:
    assert why(message(PERSON + f"Subject: {subject}\r\n")) is None


@pytest.mark.parametrize("address", [
    "claire@client.test", "noreplying.fan@client.test", "rootbeer@client.test",
    "prvs=46201db6f9=John.Smith@b.test", "SRS0=abc=de=client.test=claire@fwd.test",
    "bouncer.jean@client.test", "notify.me@client.test",
])
def test_people_are_not_robots(address: str) -> None:
    assert SHIPPED.address(address) is None


def test_the_rules_choose_languages_and_add_their_own() -> None:
    german = message("From: a@b.test\r\nSubject: Abwesenheitsnotiz: x\r\n")
    french_only = AutomaticDetector(AutomaticRules(languages=["fr"]))
    assert why(german, french_only) is None
    ours = AutomaticDetector(AutomaticRules(languages=["fr"], subjects=["Abwesenheitsnotiz",
                                                                "*en congé jusqu'au"],
                                    senders=["robot-crm", "alerts@monitoring.test"],
                                    headers=["X-Our-Crm"]))
    assert why(german, ours) == "automatic-reply subject (abwesenheitsnotiz)"
    conge = message("From: a@b.test\r\nSubject: Je suis en congé jusqu'au 3 janvier\r\n")
    assert why(conge, ours) == "automatic-reply subject (en conge jusqu'au)"
    assert why(message("From: robot-crm@b.test\r\n"), ours) == "robot sender (robot-crm)"
    assert why(message("From: alerts@monitoring.test\r\n"), ours) == (
        "robot sender (alerts@monitoring.test)")
    assert why(message("From: a@b.test\r\nX-Our-Crm: 1\r\n"), ours) == (
        "auto-reply marker (X-Our-Crm)")
    with pytest.raises(ValueError, match="no shipped subject markers for xx"):
        AutomaticDetector(AutomaticRules(languages=["xx"]))


def test_shipped_languages() -> None:
    assert {"fr", "en", "de", "es", "it", "nl"} <= set(SUBJECT_MARKERS)
