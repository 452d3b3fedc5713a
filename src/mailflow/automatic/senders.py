"""Robots known by their address or their name: the envelope sender, the From, and the
addresses a relay keeps of the original author (a Google Group's ``X-Original-Sender``).

A robot's address usually says what it is: the whole local part (``mailer-daemon``,
``noreply``), a prefix or suffix (``noreply-dmarc-support``, ``dovecot-bounces``),
words that are all a robot's (``automated-notifications``, ``system-alerts``), a
tool's name (``zabbix``, ``jira``, ``dmarcreport``), or a domain label
(``…@nomail.example``). A person's address (``notify.me``, ``bouncer.jean``) has a
word of its own and stays a person's.
"""

from __future__ import annotations

import re

from mailflow.automatic.verdict import Evidence
from mailflow.textmatch import fold

#: local parts that are robots (the whole part, after a ``+tag`` is dropped)
ROBOT_LOCAL_PARTS = frozenset({
    "mailer-daemon", "mailerdaemon", "mailer_daemon", "mail-daemon", "maildaemon",
    "postmaster", "post_master", "post-master", "abuse", "root", "daemon", "nobody",
    "noreply", "no-reply", "no_reply", "no.reply", "donotreply", "do-not-reply",
    "do_not_reply", "do.not.reply", "dontreply", "dont-reply", "noresponse",
    "no-response", "ne-pas-repondre", "nepasrepondre", "ne_pas_repondre",
    "ne.pas.repondre", "bounce", "bounces", "autoreply", "auto-reply", "autoresponder",
    "auto-responder", "majordomo", "listserv", "notification", "notifications",
})
#: whole addresses of robots whose local part could be a person's: Hotmail's feedback
#: loop (JMRP) writes as staff@hotmail.com
ROBOT_ADDRESSES = frozenset({"staff@hotmail.com", "staff@outlook.com"})
#: the same words as a prefix or suffix: ``noreply-dmarc@``, ``newsalerts-noreply@``,
#: ``gmail-noreply@``, ``bounce-123@``, ``dovecot-bounces@``
_ROBOT_WORD = (r"(?:no-?reply|no[_.]reply|do-?not-?reply|do_not_reply|dont-?reply"
               r"|mailer-?daemon|bounces?|ne[-_.]?pas[-_.]?repondre|auto-?reply|postmaster)")
_ROBOT_AFFIX = re.compile(rf"^{_ROBOT_WORD}[-._=]|[-._]{_ROBOT_WORD}$")
_EXCHANGE_SYSTEM = re.compile(r"^microsoftexchange[0-9a-f]{32}$")  # Exchange's NDR sender
_BATV = re.compile(r"^(?:prvs|btv1|msprvs1)=[^=]+=(.+)$")  # prvs=tag=local: the local part
_LIST_LOCAL = re.compile(r"^owner-|-(?:request|owner)$")
_WORDS = re.compile(r"[-._+=]+")

#: a word of the local part that says the kind, whatever the other words
#: (``noreply-dmarc-support``, ``zabbix-admin``, ``jira``)
KIND_WORDS: dict[str, str] = {
    **dict.fromkeys(("dmarc", "dmarcreport", "dmarcreports", "dmarc_rua", "dmarc_agg",
                     "opendmarc"), "DMARC report"),
    **dict.fromkeys(("tlsrpt", "tls-rpt", "tlsreport", "tlsreports"), "TLS report"),
    **dict.fromkeys(("nagios", "icinga", "icinga2", "zabbix", "alertmanager", "prometheus",
                     "grafana", "monit", "uptimerobot", "pingdom", "statuscake",
                     "pagerduty", "opsgenie", "checkmk", "centreon", "librenms", "observium",
                     "netdata", "munin", "sensu", "datadog", "newrelic", "zenoss", "uptimekuma"),
                    "monitoring alert"),
    **dict.fromkeys(("jira", "servicenow", "glpi", "otrs", "znuny", "zammad", "osticket",
                     "redmine", "mantis", "mantisbt", "bugzilla", "youtrack", "freshservice"),
                    "ticket notification"),
    **dict.fromkeys(("mailman", "sympa", "ezmlm", "lyris", "mlmmj", "listar", "listproc",
                     "smartlist"), "mailing list"),
}
#: words that make a local part a robot's whatever the others (``calendar-notification``)
_NOTICE_ALWAYS = frozenset({
    "notification", "notifications", "notifier", "automated", "automailer", "autonotify",
    "autonotification", "mailrobot", "mailbot", "autosender", "autoconfirm", "newsletter",
    "newsletters", "quarantine", "fail2ban", "spamdigest",
})
#: words a robot's local part is made of (``system.alerts``, ``auto-confirm``): when
#: every word is one of these, a filler or a number, and one says the kind
_NOTICE_WORDS = frozenset({
    *_NOTICE_ALWAYS, "notify", "notifs", "alert", "alerts", "alerting", "automail",
    "cron", "crond", "anacron", "logwatch", "mailings", "emailing",
    "campaigns", "confirm", "monitoring",
})
_FILLER_WORDS = frozenset({
    "no", "do", "not", "reply", "auto", "mail", "email", "e", "system", "systems", "server",
    "service", "services", "daemon", "report", "reports", "center", "centre", "app",
    "account", "accounts", "security", "info", "news", "update", "updates", "event",
    "events", "status", "sms", "web", "online", "portal", "my", "team",
})
_BULK_WORDS = frozenset({"newsletter", "newsletters", "mailings", "emailing", "campaigns"})
#: domain labels of robots' domains (``…@nomail.example.com``, ``…@bounces.shop.test``)
_ROBOT_DOMAIN_LABELS = frozenset({
    "nomail", "noreply", "no-reply", "donotreply", "do-not-reply", "bounce", "bounces",
    "mailer-daemon", "notifications", "notification", "notify", "alerts",
})
#: the bounce domains of bulk and transactional mail services (envelope or Return-Path)
_SERVICE_DOMAIN = re.compile(
    r"(?:^|\.)(?:amazonses\.com|sendgrid\.net|mailgun\.(?:org|net)|mcsv\.net|mcdlv\.net"
    r"|rsgsv\.net|mandrillapp\.com|sparkpostmail\.com|mailjet\.com|sendinblue\.com"
    r"|brevo\.com|exacttarget\.com|createsend\.com|cmail\d+\.com|hubspotemail\.net"
    r"|mktomail\.com|emarsys\.net|mailchimpapp\.net|postmarkapp\.com|mtasv\.net"
    r"|mailerlite\.com|klaviyomail\.com|ccsend\.com|rsys\d*\.(?:com|net)|bounces\.amazon\.com"
    r"|listmonk\.app|sendpulse\.com)$")
#: local parts that ask a robot's address to be believed only with more: a mail system,
#: a role sending receipts
_WEAK_LOCAL = frozenset({
    "admin", "administrator", "sysadmin", "mail", "mailadmin", "mail-admin", "smtp",
    "mta", "mx", "system", "mailserver", "mailsystem", "mail-system", "hostmaster",
    "mailer", "billing", "invoice", "invoices", "invoicing", "receipts", "receipt",
    "orders", "order", "bookings", "booking", "reservations", "payments", "payment",
    "remittance", "remittances", "accounts-payable", "accountspayable", "statements",
    "shipping", "tracking", "confirmation", "confirmations", "transactional", "news",
    "marketing", "offers", "promo", "promotions", "deals", "digest", "updates", "ap",
    "accounts", "payables", "remittance-advice", "voicemail",
})

#: display names robots sign with (whole words, anywhere), and "… via RT" (Request
#: Tracker's notifications)
_ROBOT_NAME = re.compile(r"\b(?:mail delivery (?:system|subsystem|service)|mailer[- ]daemon"
                         r"|postmaster|ndr administrator|mail administrator"
                         r"|delivery status notification|no[- ]?reply|do[- ]not[- ]reply"
                         r"|ne pas repondre|nicht antworten|no responder|non rispondere"
                         r"|niet beantwoorden)\b|\bvia rt$")
#: names of notification robots: not alone (a team may sign "Alerts Desk")
_NOTICE_NAME = re.compile(r"\b(?:notifications?|alerts?|alerting|automated|automatic"
                          r"|mail system|mailer|monitoring|benachrichtigung(?:en)?)\b")
#: "'someone@x' via Group" (Google Groups rewrites the From of a post so)
_VIA = re.compile(r"^['\"]?([^'\"\s]+@[^'\"\s]+?)['\"]? via \S")


class Senders:
    """Robots' addresses: the shipped ones and the rules' own (``senders``)."""

    def __init__(self, extra: list[str]) -> None:
        lowered = {s.lower().strip() for s in extra}
        self.extra_locals = {s for s in lowered if "@" not in s}
        self.addresses = ROBOT_ADDRESSES | {s for s in lowered if "@" in s}

    def sender(self, address: str) -> Evidence | None:
        """``address`` is a robot's, judging by its local part or its domain."""
        lowered = address.lower().strip()
        if lowered in self.addresses:
            return Evidence("robot sender", lowered)
        local, _, domain = lowered.rpartition("@") if "@" in lowered else (lowered, "", "")
        local = local.strip('"')
        batv = _BATV.match(local)
        if batv:
            local = batv.group(1)
        base = local.partition("+")[0] or local
        words = [w for w in _WORDS.split(base) if w and not w.isdigit()]
        for word in words:
            kind = KIND_WORDS.get(word)
            if kind is not None:
                return Evidence(kind, f"sender {local}")
        if (base in ROBOT_LOCAL_PARTS or base in self.extra_locals
                or _ROBOT_AFFIX.search(base) or _EXCHANGE_SYSTEM.match(base)):
            return Evidence("robot sender", local)
        if _LIST_LOCAL.search(base):
            return Evidence("mailing-list sender", "")
        if any(w in _NOTICE_ALWAYS for w in words) or (
                words and all(w in _NOTICE_WORDS or w in _FILLER_WORDS for w in words)
                and any(w in _NOTICE_WORDS for w in words)):
            kind = "bulk mailer" if any(w in _BULK_WORDS for w in words) else (
                "notification robot")
            return Evidence(kind, f"sender {local}")
        labels = domain.split(".")[:-2]  # not the registered name itself (nomail.com is)
        if any(label in _ROBOT_DOMAIN_LABELS for label in labels):
            return Evidence("robot sender", f"{local}@{domain}")
        return None

    def weak_sender(self, address: str) -> Evidence | None:
        """What an address hints without deciding: a mail system's or a role's local part,
        a bulk service's bounce domain."""
        local, _, domain = address.lower().strip().rpartition("@")
        if _SERVICE_DOMAIN.search(domain):
            return Evidence("bulk mailer", f"sent through {domain}", 0.5)
        base = local.strip('"').partition("+")[0].replace(".", "-").replace("_", "-")
        if base in _WEAK_LOCAL:
            return Evidence("robot sender", f"role address {base}@", 0.25)
        return None

    def name(self, name: str) -> Evidence | None:
        """A robot's display name ("Mail Delivery System", "… via RT", "No Reply"), or the
        original author a group names ("'noreply@x' via Group")."""
        via = _VIA.match(name.strip())
        if via:
            found = self.sender(via.group(1))
            if found is not None:
                return Evidence(found.kind, f"{found.detail} via a group", found.weight)
        if _ROBOT_NAME.search(" ".join(fold(name).split())):
            return Evidence("robot name in From", name.strip()[:60])
        return None

    @staticmethod
    def weak_name(name: str) -> Evidence | None:
        """A display name that sounds like a notification robot's, not deciding alone."""
        found = _NOTICE_NAME.search(" ".join(fold(name).split()))
        if found:
            return Evidence("notification robot", f"From name {name.strip()[:60]}", 0.5)
        return None
