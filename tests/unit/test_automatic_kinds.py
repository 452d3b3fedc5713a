"""The kinds of automatic mail mailflow knows beyond RFC 3834 (mailflow.automatic), each
with a message written here after what real robots send, and the people who write
about such things and must still be answered. Every verdict names its sign."""

from __future__ import annotations

import time

import pytest

from mailflow.automatic import SHIPPED, AutomaticDetector, AutomaticRules, OwnSign
from mailflow.message import Envelope, Message, parse_message

PERSON = "From: Claire Martin <claire@client.test>\r\nTo: sav@example.com\r\n"


def message(head: str, body: str = "Bonjour,\r\nune question.\r\n", *,
            mail_from: str | None = None) -> Message:
    raw = f"{head}Message-ID: <m1@client.test>\r\n\r\n{body}".encode()
    sender = mail_from if mail_from is not None else "someone@client.test"
    return parse_message(raw, Envelope(mail_from=sender, rcpt_to=("sav@example.com",)))


def sign(msg: Message, detector: AutomaticDetector = SHIPPED) -> str | None:
    found = detector.judge(msg)
    return found.sign if found else None


def mixed(head: str, text: str, *parts: str) -> Message:
    """A multipart/mixed message: ``text`` then ``parts`` (each with its own headers)."""
    body = f"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    body += "".join(f"--B\r\n{part}\r\n" for part in parts) + "--B--\r\n"
    return message(head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n',
                   body)


# --- delivery reports known by their wording and structure -------------------------------

EXIM = ("This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        "  paul@example.com\r\n    host mx.example.com [192.0.2.1]\r\n"
        "    SMTP error from remote mail server after RCPT TO:<paul@example.com>:\r\n"
        "    550 5.1.1 User unknown\r\n")


@pytest.mark.parametrize(("head", "body"), [
    # a mail system's odd From, a subject and an MTA's text
    ("From: Mailsystem <mail@mx3.provider.test>\r\nSubject: Mail could not be delivered\r\n",
     EXIM),
    # a delay warning: Sendmail's and Postfix's wording
    ("From: <sysop@relay.provider.test>\r\nSubject: Mail Delivery Warning\r\n",
     "This is a warning message only.\r\nYou do not need to resend your message.\r\n\r\n"
     "The original message was received at Mon, 1 Jan 2024 10:00:00 +0100\r\n"),
    # Exchange in German, in French
    ("From: a@b.test\r\nSubject: Nachricht konnte nicht zugestellt werden\r\n",
     "Fehler bei der Nachrichtenzustellung an folgende Empfänger oder Gruppen:\r\n\r\n"
     "paul@example.com\r\nDiagnoseinformationen für Administratoren:\r\n"),
    ("From: a@b.test\r\nSubject: Votre message n'a pas pu être remis\r\n",
     "Ce message a été créé automatiquement par le logiciel de distribution du courrier."
     "\r\nLa remise a échoué pour ces destinataires ou groupes :\r\n"),
])
def test_bounces_known_by_subject_and_body(head: str, body: str) -> None:
    assert sign(message(head, body)) == "delivery report"


def test_bounce_by_subject_markers_and_report_parts() -> None:
    assert sign(message("From: a@b.test\r\nSubject: Undeliverable: your order\r\n")) == (
        "delivery report")
    assert sign(message("From: a@b.test\r\nSubject: Warning: message 1rXk-0002 delayed 24 "
                        "hours\r\n")) == "delivery report"
    report = mixed("From: a@b.test\r\nSubject: Returned\r\n", "see the report",
                   "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n")
    assert SHIPPED.judge(report) is not None
    assert SHIPPED.judge(report).why == (  # type: ignore[union-attr]
        "delivery report (multipart/mixed with message/delivery-status)")


# --- reports: DMARC, TLS, feedback, read receipts --------------------------------------

GZIP = ("Content-Type: application/gzip; name=\"x.xml.gz\"\r\nContent-Transfer-Encoding: "
        "base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\nH4sIAAAAAAAA\r\n")


def test_dmarc_aggregate_reports() -> None:
    # Microsoft's: the reporter's address says it
    assert sign(message("From: DMARC Aggregate Report <dmarcreport@microsoft.test>\r\n"
                        "Subject: [Preview] Report Domain: example.com\r\n")) == "DMARC report"
    # Google's, relayed through a group: the file name RFC 7489 gives it
    relayed = mixed("From: 'noreply-dmarc-support@google.test' via DMARC <dmarc@example.com>"
                    "\r\nSubject: Report domain: example.com Submitter: google.test\r\n",
                    "", GZIP.format(name="google.test!example.com!1700000000!1700086399.xml.gz"))
    assert sign(relayed) == "DMARC report"
    # any gzip with the report's subject, whoever sends it
    anyone = mixed("From: reports@isp.test\r\nSubject: DMARC aggregate report\r\n",
                   "This is an aggregate report.", GZIP.format(name="report.xml.gz"))
    found = SHIPPED.judge(anyone)
    assert found is not None and found.sign == "DMARC report"
    assert sign(message("From: a@b.test\r\nSubject: Report Domain: example.com Submitter: "
                        "isp.test Report-ID: <1234@isp.test>\r\n")) == "DMARC report"


def test_tls_feedback_and_read_reports() -> None:
    tls = message("From: reports@isp.test\r\nSubject: Report Domain: example.com Submitter: "
                  "isp.test\r\nTLS-Report-Domain: example.com\r\nTLS-Report-Submitter: isp.test"
                  "\r\n")
    assert sign(tls) == "TLS report"
    tls_part = message('From: a@b.test\r\nContent-Type: multipart/report; report-type=tlsrpt; '
                       'boundary="B"\r\n', "--B\r\nContent-Type: text/plain\r\n\r\nTLS report"
                       "\r\n--B\r\nContent-Type: application/tlsrpt+gzip\r\n\r\nH4sI\r\n--B--")
    assert SHIPPED.judge(tls_part).why == (  # type: ignore[union-attr]
        "TLS report (multipart/report; report-type=tlsrpt)")
    arf = message('From: a@b.test\r\nContent-Type: multipart/report; '
                  'report-type=feedback-report; boundary="B"\r\n',
                  "--B\r\nContent-Type: text/plain\r\n\r\nauth failure\r\n--B\r\n"
                  "Content-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure"
                  "\r\n--B--\r\n")
    assert sign(arf) == "feedback report"
    read = message("From: Paul <paul@b.test>\r\nSubject: Read: your order\r\n",
                   "Your message\r\n\r\n  To: Paul\r\n  Subject: your order\r\n\r\n"
                   "was read on 12/03/2024 10:00.\r\n")
    assert sign(read) == "read receipt"


# --- lists, robots' senders and notifications ------------------------------------------

def test_list_moderation_notice() -> None:
    held = message("From: support-list@lists.example.org\r\nSubject: Your message to "
                   "Support-list awaits moderator approval\r\n",
                   "Your mail to 'Support-list' with the subject\r\n\r\n    Order\r\n\r\n"
                   "Is being held until the list moderator can review it for approval.\r\n\r\n"
                   "The reason it is being held:\r\n\r\n    Post by non-member\r\n")
    assert sign(held) == "list moderation"
    assert sign(message("From: l@lists.test\r\nX-List-Administrivia: yes\r\n")) == (
        "list moderation")
    assert sign(message("From: l@lists.test\r\nX-Mailman-Version: 2.1.39\r\n")) == "mailing list"
    assert sign(message("From: l@lists.test\r\nSubject: confirm "
                        "0123456789abcdef0123456789abcdef\r\n")) == "mailing list"


@pytest.mark.parametrize(("head", "kind"), [
    ("From: Bank <automated-notifications@nomail.bank.test>\r\nSubject: Statement\r\n",
     "notification robot"),
    ("From: alerts@bank.test\r\nSubject: Card used\r\n", "notification robot"),
    ("From: Acme <info@notifications.acme.test>\r\nSubject: News\r\n", "robot sender"),
    ("From: Zabbix <zabbix@ops.test>\r\nSubject: x\r\n", "monitoring alert"),
    ("From: Jane Doe (Jira) <jira@acme.atlassian.test>\r\nSubject: x\r\n",
     "ticket notification"),
    ("From: Acme <newsletter@acme.test>\r\nSubject: June\r\n", "bulk mailer"),
    ("From: secure@gateway.test\r\nSubject: Encrypted Mail Notification\r\n",
     "notification robot"),
    ("From: Acme Support <support@acme.test>\r\nSender: acme-bounces@lists.test\r\n",
     "robot sender"),
    ("From: a@b.test\r\nX-Original-Sender: noreply@service.test\r\n", "robot sender"),
])
def test_robots_known_by_their_address_or_subject(head: str, kind: str) -> None:
    assert sign(message(head)) == kind


@pytest.mark.parametrize(("head", "body"), [
    ("From: ops@example.net\r\nSubject: ** PROBLEM Service Alert: web01/HTTP is CRITICAL "
     "**\r\n", "***** Nagios *****\r\n\r\nNotification Type: PROBLEM\r\n"),
    ("From: ops@example.net\r\nSubject: PROBLEM Alert: web01 is DOWN\r\n", "Host down."),
    ("From: ops@example.net\r\nSubject: [FIRING:2] HighLoad (web01 critical)\r\n", "Labels"),
    ("From: ops@example.net\r\nSubject: Problem: High CPU load on web01\r\n",
     "Problem started at 10:02:03 on 2024.01.02\r\nProblem name: High CPU load\r\n"
     "Host: web01\r\nSeverity: High\r\nOriginal problem ID: 4242\r\n"),
])
def test_monitoring_alerts(head: str, body: str) -> None:
    assert sign(message(head, body)) == "monitoring alert"


def test_ticket_notifications() -> None:
    assigned = message("From: ServiceNow <acme@service-now.test>\r\nSubject: Incident "
                       "INC0012345 has been assigned to your group\r\n",
                       "Short description: printer\r\nTo view the incident, click here.\r\n"
                       "You are receiving this email because you are a member of the group.")
    assert sign(assigned) == "ticket notification"
    assert sign(message("From: a@b.test\r\nX-Freshservice-Ticket-Id: 42\r\n")) == (
        "ticket notification")


# --- receipts, remittance advices, bulk mailers ----------------------------------------

@pytest.mark.parametrize(("head", "body"), [
    ("From: Acme Store <store@acme.test>\r\nSubject: Your receipt from Acme #1234-5678\r\n",
     "Thanks for shopping with us.\r\nTotal: 42.00 EUR\r\n\r\n"
     "This is an automated email, please do not reply.\r\n"),
    ("From: Accounts Payable <ap@bigcorp.test>\r\nSubject: Remittance Advice 4500012345\r\n",
     "Please find attached the remittance advice for payment 4500012345.\r\n\r\n"
     "This is an automated email. Please do not reply to this email.\r\n"),
    ("From: Hotel <bookings@hotel.test>\r\nSubject: Confirmation of Booking\r\n"
     "X-Mailer: Microsoft CDO for Windows 2000\r\n", "Thank you for booking with us.\r\n"),
])
def test_receipts_and_confirmations(head: str, body: str) -> None:
    assert sign(message(head, body)) == "notification robot"


@pytest.mark.parametrize("head", [
    "From: Shop <hello@shop.test>\r\nX-CSA-Complaints: csa-complaints@eco.de\r\n",
    "From: Shop <hello@shop.test>\r\nX-Campaign-ID: 42\r\n",
    "From: Shop <hello@shop.test>\r\nX-Mailer: Sendinblue\r\n",
    "From: Shop <hello@shop.test>\r\nX-MC-User: 123abc\r\n",
])
def test_bulk_mailers_by_their_headers(head: str) -> None:
    assert sign(message(head)) == "bulk mailer"


def test_a_newsletter_with_no_list_header() -> None:
    """A sending service's header is a hint; the unsubscribe line agrees."""
    news = message("From: Shop <hello@shop.test>\r\nSubject: Summer sale\r\nFeedback-ID: "
                   "1:2:shop:ses\r\n", "Our summer sale starts today!\r\n\r\n"
                   "Unsubscribe | View this email in your browser\r\n")
    assert sign(news) == "bulk mailer"
    # the same transport header on a web form's message: a person's question
    form = message("From: Shop <web@shop.test>\r\nSubject: [Contact] New request\r\n"
                   "Feedback-ID: 1:2:shop:ses\r\nReply-To: anna@client.test\r\n",
                   "Name: Anna\r\nMessage: where is my order 1234?\r\n")
    assert sign(form) is None


def test_out_of_office_by_its_text() -> None:
    ooo = message("From: Paul <paul@b.test>\r\nSubject: Thank you for your message\r\n",
                  "This is an automatic reply.\r\n\r\nI am out of the office until Monday "
                  "with limited access to email.\r\n")
    assert sign(ooo) == "out-of-office"


# --- people who must stay people --------------------------------------------------------

@pytest.mark.parametrize(("head", "body"), [
    # a person whose message bounced, in her own words
    (PERSON + "Subject: My message could not be delivered to your colleague\r\n",
     "Hello,\r\nmy message could not be delivered to your colleague Paul, it bounced twice."
     "\r\nCould you forward him my question: where is my order 1234?\r\n"),
    # a person forwarding a bounce inline, with a question
    (PERSON + "Subject: Fwd: Undelivered Mail Returned to Sender\r\n",
     "What is this? I never wrote to this address.\r\n\r\n"
     "---------- Forwarded message ---------\r\nFrom: Mail Delivery System "
     "<MAILER-DAEMON@mx.client.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n"
     "This is the mail system at host mx.client.test.\r\n\r\n" + EXIM),
    # a person forwarding a newsletter with its footer
    (PERSON + "Subject: Fwd: Summer sale\r\n",
     "Is this offer valid in your shop too?\r\n\r\n-------- Original Message --------\r\n"
     "Subject: Summer sale\r\n\r\nOur summer sale starts today!\r\nThis is an automated "
     "email, please do not reply.\r\nUnsubscribe | View this email in your browser\r\n"),
    # a person asking about her order confirmation (the robots' own words)
    (PERSON + "Subject: Order confirmation 1234 - wrong address\r\n",
     "Hello,\r\nthank you for your order confirmation, but the delivery address is wrong."
     "\r\nPlease do not reply to this email address, call me instead.\r\n"),
    # a person complaining about our acknowledgement, quoting it
    (PERSON + "Subject: No answer yet\r\n",
     "I only got \"This is an automated message\" from you, and no answer to my question."),
    # a person whose ticket was closed, a customer's monitor that is down
    (PERSON + "Subject: My ticket #1234 has been closed without an answer\r\n",
     "Please reopen it."),
    (PERSON + "Subject: The monitor is DOWN again\r\n", "It does not switch on. Repair?"),
    # a person out of the office next week, asking for a later delivery
    (PERSON + "Subject: Delivery next week\r\n",
     "I am out of the office until Monday, please deliver on Tuesday.\r\n"),
    # a person writing from a role address about a booking confirmation
    ("From: Orders <orders@client.test>\r\nSubject: Booking confirmation missing\r\n",
     "We never got the booking confirmation for order 1234."),
    # parcels whose delivery failed, in the words a mail system would use too
    (PERSON + "Subject: Delivery failed - order 1234 never arrived\r\n",
     "My parcel never arrived, the carrier says delivery failed."),
    ("From: Admin <admin@client.test>\r\nSubject: Nicht zugestellt: Paket 1234\r\n",
     "Guten Tag, mein Paket wurde nicht zugestellt."),
    (PERSON + "Subject: Colis non distribuable\r\n", "Mon colis est revenu, pourquoi ?"),
    # a person away herself, saying so
    (PERSON + "Subject: Absente jusqu'au 5 mai\r\n",
     "Je suis absente jusqu'au 5 mai, merci de livrer ensuite."),
    # the DMARC administrator's own question
    (PERSON + "Subject: Question about DMARC reports\r\n", "Do you send DMARC reports?"),
    # a Return-Path <> kept by a tool that stored and re-sent a person's message
    (PERSON + "Subject: multimime\r\nReturn-Path: <>\r\n", "Hello, a question."),
])
def test_people_writing_about_robots_are_people(head: str, body: str) -> None:
    assert SHIPPED.judge(message(head, body)) is None


def test_a_forwarded_bounce_attached_is_a_persons() -> None:
    attached = mixed(PERSON + "Subject: Fwd: Undeliverable\r\n", "What is this?",
                     "Content-Type: message/rfc822\r\n\r\nFrom: MAILER-DAEMON@mx.test\r\n"
                     "Subject: Undeliverable: x\r\nContent-Type: text/plain\r\n\r\n" + EXIM)
    assert SHIPPED.judge(attached) is None


# --- the rules' own signs ----------------------------------------------------------------

def test_own_signs_decide_alone_or_together() -> None:
    rules = AutomaticRules(signs=[
        OwnSign(name="crm notification", header="X-Crm-Event", value="^(created|updated)$"),
        OwnSign(name="invoice run", subject=r"^Invoice \d+ from ", weight=0.5),
        OwnSign(name="invoice run", body="generated by BillingSystem", weight=0.5),
        OwnSign(name="supplier robot", sender=r"^robot-.*@supplier\.test$"),
    ])
    ours = AutomaticDetector(rules)
    crm = ours.judge(message("From: a@b.test\r\nX-Crm-Event: created\r\n"))
    assert crm is not None and crm.sign == "crm notification"
    assert crm.why == "crm notification (X-Crm-Event: created)"
    assert ours.judge(message("From: a@b.test\r\nX-Crm-Event: deleted\r\n")) is None
    half = message("From: a@b.test\r\nSubject: Invoice 42 from Acme\r\n", "Hello")
    assert ours.judge(half) is None  # one weak sign alone
    both = message("From: a@b.test\r\nSubject: Invoice 42 from Acme\r\n",
                   "This invoice was generated by BillingSystem.")
    assert sign(both, ours) == "invoice run"
    assert sign(message("From: robot-7@supplier.test\r\n"), ours) == "supplier robot"
    assert sign(message("From: a@b.test\r\n", mail_from="robot-7@supplier.test"), ours) == (
        "supplier robot")


@pytest.mark.parametrize(("fields", "error"), [
    ({"subject": "(unclosed"}, "invalid regular expression"),
    ({"name": "bad: name", "subject": "x"}, "metric label"),
    ({"name": "nothing"}, "needs a header, sender, subject or body"),
    ({"value": "x"}, "needs the 'header'"),
    ({"header": "X-A", "weight": 0}, "greater than 0"),
    ({"header": "X A"}, "not a header name"),
])
def test_own_signs_are_checked(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        OwnSign.model_validate(fields)


def test_a_runaway_pattern_gives_up_in_time() -> None:
    runaway = AutomaticDetector(AutomaticRules(signs=[OwnSign(body="(a+)+$")]))
    msg = message(PERSON + "Subject: x\r\n", "a" * 40 + "b")
    started = time.monotonic()
    assert runaway.judge(msg) is None
    assert time.monotonic() - started < 1
