"""Reports known by their structure: delivery status notifications (RFC 3464), read
receipts (RFC 8098), abuse and authentication-failure reports (ARF, RFC 5965), TLS
reports (RFC 8460) and DMARC aggregate reports (RFC 7489).

Each is a content type, a report part, or for DMARC an attachment: a zip or gzip
file named ``receiver!domain!begin!end[!id].xml.gz`` as RFC 7489 7.2.1.1 writes it,
or any compressed or XML file with the report's subject ("Report Domain: …
Submitter: …") or a DMARC reporter's address. Only the message's own parts count: a
person forwarding a bounce (``message/rfc822`` around the report) is still a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailflow.automatic.verdict import Evidence

#: report content types and the kind each says (the whole message, or one of its parts)
REPORT_KINDS: dict[str, str] = {
    "message/delivery-status": "delivery report",
    "message/global-delivery-status": "delivery report",
    "text/rfc822-headers": "delivery report",
    "message/rfc822-headers": "delivery report",
    "message/disposition-notification": "read receipt",
    "message/global-disposition-notification": "read receipt",
    "message/feedback-report": "feedback report",
    "application/tlsrpt+gzip": "TLS report",
    "application/tlsrpt+json": "TLS report",
}
REPORT_TYPES = frozenset({*REPORT_KINDS, "multipart/report"})
#: multipart/report's report-type parameter and the kind it says
_REPORT_TYPE_KINDS = {
    "delivery-status": "delivery report", "global-delivery-status": "delivery report",
    "disposition-notification": "read receipt",
    "global-disposition-notification": "read receipt",
    "feedback-report": "feedback report", "tlsrpt": "TLS report",
}
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w.+-]+)", re.I)
#: RFC 7489's file name of an aggregate report
_DMARC_FILE = re.compile(
    r"^[^!\s/]+![^!\s/]+!\d{9,11}!\d{9,11}(?:![^!\s/]*)?\.(?:xml(?:\.gz)?|zip|gz)$", re.I)
_COMPRESSED = frozenset({
    "application/zip", "application/gzip", "application/x-gzip", "application/x-zip",
    "application/x-zip-compressed", "application/octet-stream", "application/xml",
    "text/xml", "application/x-gunzip", "multipart/x-zip",
})
_COMPRESSED_NAME = re.compile(r"\.(?:zip|gz|xml)$", re.I)
#: RFC 7489's subject ("Report Domain: x Submitter: y Report-ID: z"), RFC 8460's too
_REPORT_SUBJECT = re.compile(r"\breport[- ]?domain\s*:\s*\S+.*\bsubmitter\s*:", re.I)
_DMARC_WORDS = re.compile(r"\bdmarc\b|\breport[- ]?domain\s*:|\baggregate report\b", re.I)


def _report_kind(content_type: str, part_types: Iterable[str],
                 header_value: str) -> Evidence | None:
    if content_type == "multipart/report":
        found = _REPORT_TYPE.search(header_value)
        kind = _REPORT_TYPE_KINDS.get(found.group(1).lower()) if found else None
        if kind is None:  # no or an unknown report-type: its parts tell
            kind = next((REPORT_KINDS[p] for p in part_types if p in REPORT_KINDS),
                        "delivery report")
        return Evidence(kind, "multipart/report" + (f"; report-type={found.group(1)}"
                                                    if found else ""))
    kind = REPORT_KINDS.get(content_type)
    if kind is not None:
        return Evidence(kind, content_type)
    for part in part_types:
        kind = REPORT_KINDS.get(part)
        if kind is not None:
            return Evidence(kind, f"{content_type} with {part}")
    return None


def report(content_type: str, content_header: str, part_types: Iterable[str],
           attachments: Iterable[tuple[str, str]], subject: str,
           author: str, tls: bool = False) -> Evidence | None:
    """The message is a report, by its content type, its parts or its attachment.
    ``content_header``: the Content-Type field as written (for ``report-type``);
    ``author``: the From address (a DMARC reporter's); ``tls``: RFC 8460's
    ``TLS-Report-Domain`` header is there."""
    found = _report_kind(content_type, part_types, content_header)
    if found is not None:
        return found
    if tls:
        return Evidence("TLS report", "TLS-Report-Domain")
    files = [(ctype, name) for ctype, name in attachments
             if ctype in _COMPRESSED or ctype in REPORT_KINDS]
    for ctype, name in files:
        kind = REPORT_KINDS.get(ctype)
        if kind is not None:
            return Evidence(kind, f"{ctype} attachment")
        if _DMARC_FILE.match(name):
            return Evidence("DMARC report", f"aggregate report {name[:80]}")
    if ":" in subject and _REPORT_SUBJECT.search(subject):
        kind = "TLS report" if tls or "tls" in subject.lower() else "DMARC report"
        return Evidence(kind, f"subject {subject.strip()[:60]}")
    reports = [name for ctype, name in files
               if ctype != "application/octet-stream" or _COMPRESSED_NAME.search(name)]
    if reports and ("dmarc" in author or _DMARC_WORDS.search(subject)):
        return Evidence("DMARC report", f"{reports[0][:60] or 'compressed report'} "
                        "with a DMARC subject or sender")
    return None
