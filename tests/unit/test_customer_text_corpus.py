"""`customer_text` over the real messages of ../shared (corpus, realmail, realmail2).

Every body: no exception, never longer than the input, no quoted line left (and a
quote cut wherever there was one). A handful of files read by
hand: where the history starts, the cut happens, and the customer's words stay.
Collected only where ../shared exists (see tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED
from mailflow.message import Envelope, parse_message
from mailflow.message.customer_text import split_customer_text

FOLDERS = ("corpus", "realmail", "realmail2")
NOT_MAIL = (".json", ".yaml", ".md")


def body(path: Path) -> str:
    return parse_message(path.read_bytes(), Envelope(mail_from="", rcpt_to=())).text


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_message(folder: str) -> None:
    files = [p for p in sorted((SHARED / folder).glob("*"))
             if p.is_file() and p.suffix not in NOT_MAIL]
    assert files, f"no messages in {SHARED / folder}"  # ../shared is here: so are they
    quoted = 0
    for path in files:
        text = body(path)
        result = split_customer_text(text)
        assert len(result.text) <= len(text), path.name
        assert not any(line.lstrip().startswith(">") for line in result.text.split("\n")), \
            path.name
        first = next((i for i, line in enumerate(text[:50_000].split("\n"))
                      if line.lstrip().startswith(">")), None)
        if first is not None:  # the quote is cut (as a quote, or within a longer cut)
            quoted += 1
            assert any(cut.start <= first < cut.end for cut in result.cuts), path.name
    assert quoted or folder == "corpus", f"no quoted history in {folder}?"


#: file -> (how the kept text starts, how it ends, what it must not contain)
READ_BY_HAND = {
    # the talon project's replies of common clients: "Hello", then the history
    "realmail/talon__tests-fixtures-standard_replies-gmail.eml": ("Hello", "Hello", "Hi"),
    "realmail/talon__tests-fixtures-standard_replies-outlook.eml": (
        "Hello", "Hello", "The manager"),
    "realmail/talon__tests-fixtures-standard_replies-yahoo.eml": ("Hello", "Hello", "Test"),
    "realmail/talon__tests-fixtures-standard_replies-iphone.eml": (
        "Hello", "Hello", "Sent from"),
    # answer below "On … wrote:" and its quote
    "realmail/talon__tests-fixtures-standard_replies-thunderbird.eml": (
        "Hello", "Hello", "wrote"),
    # German, answer below "Am … schrieb …:" and a long quote
    "realmail/zammad__test-data-mail-mail005.box": ("Hallo Martin,", "John & Marc", "> "),
    # Outlook in German: disclaimer, then "Von: … Gesendet: …"
    "realmail/zammad__test-data-mail-mail003.box": (
        "Hallo Fritz,", "_ __ ___ ____________________________ ___ __ _", "Gesendet:"),
    # Outlook: "From: … [mailto:…]" / "Sent:" after the sender's signature
    "realmail/zammad__test-data-mail-mail082.box": ("Goeie dag,", "0865665137", "INX4183"),
    # "At 14:56 02.06.2003 -0400, you wrote:" above a quote whose long line lost its ">"
    "realmail/rt__t-data-emails-new-ticket-from-iso-8859-1-full.eml": (
        "Hello again,", "&aerlig;", "running"),
    "realmail/redmine__test-fixtures-mail_handler-issue_update_with_quoted_reply_above.eml": (
        "An update to the issue by the sender.", "platea dictumst.", "Reply above"),
    "realmail2/django-helpdesk__tests-test_files-forwarded-message.eml": (
        "This is email body", "This is email body", "GitHub"),
    # French attribution above a quote, then a signature
    "realmail2/notmuch__test-corpora-default-cur-52:2,": (
        "Thank you Allan", "Thank you Allan", "a écrit"),
    # Outlook's rule line, then "From: … Sent: …" without quote marks
    "realmail2/mu__testdata-testdir-new-1220863087.12663_9.mindcrime": (
        "Actually, almost", "Paul", "____"),
    "corpus/fr_question_sav.eml": ("Bonjour,", "où en est ma livraison ?", "Claire Martin"),
}


@pytest.mark.parametrize("name", READ_BY_HAND)
def test_read_by_hand(name: str) -> None:
    path = SHARED / name
    assert path.is_file(), f"no {path}"
    starts, ends, absent = READ_BY_HAND[name]
    kept = split_customer_text(body(path)).text
    assert kept.startswith(starts) and kept.endswith(ends), kept
    assert absent not in kept, kept
