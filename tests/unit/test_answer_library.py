"""The answer library, its checks, the merge fields, and the agent's reply turned into the
customer's answer (the daemon's own tests: tests/integration/test_answers.py)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from mailflow.answers.analysis import fold, stems
from mailflow.answers.library import load_library
from mailflow.answers.reply import agent_text
from mailflow.answers.review import review
from mailflow.answers.suggest import Suggester, render
from mailflow.config import ConfigError
from mailflow.message import Envelope, parse_message
from mailflow.stages.answers import signing_name

RULES = Path(__file__).resolve().parents[2] / "rules"
ANSWER = """---
id: test-answer
code: TST-01
title: "Test answer"
theme: tests
language: en
keywords: [test]
fields: [customer_name, case, agent_name]
status: validated
owner: team@example.com
review_by: 2030-01-01
---
Hello{% if customer_name %} {{ customer_name }}{% endif %},

Your case is {{ case }}.

{{ agent_name }}
"""


def write(folder: Path, text: str, name: str = "test-answer.en.md") -> Path:
    path = folder / "tests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_library(folder)
    return [str(p) for p in caught.value.problems]


def test_the_shipped_library() -> None:
    library = load_library(RULES / "answers")
    ids = {a.id for a in library}
    assert len(ids) >= 40 and library.languages == ("en", "fr")
    assert all(len(library.versions(i)) == 2 for i in ids)
    assert {"seminar-registration", "brochure-request", "warranty-claim", "account-access",
            "invoice-copy", "quote-request", "return-procedure", "delivery-delay",
            "complaint-ack"} <= ids
    drafts = {a.id for a in library if not a.validated}
    assert drafts == {"delivery-appointment", "payment-reminder-paid", "repair-out-of-warranty",
                      "newsletter-unsubscribe"}


def test_a_good_answer_loads(tmp_path: Path) -> None:
    write(tmp_path, ANSWER)
    (answer,) = load_library(tmp_path)
    assert answer.code == "TST-01" and answer.body_line == 13


@pytest.mark.parametrize(("change", "where", "said"), [
    (("{{ case }}", "{{ cas }}"), ":15:", "unknown field 'cas' (did you mean 'case'?)"),
    (("{% endif %}", ""), ":17:", "template syntax error"),
    (("fields: [customer_name, case, agent_name]", "fields: [customer_name, cases, agent_name]"),
     ":8:", "unknown merge field 'cases' (did you mean 'case'?)"),
    (("fields: [customer_name, case, agent_name]", "fields: [customer_name, agent_name]"),
     ":8:", "the body uses case: add it to 'fields:'"),
    (("status: validated", "status: valid"), ":9:", "'status'"),
    (("title: \"Test answer\"", "title: \"Test answer"), ":4:", ""),
    (("id: test-answer", "id: other-answer"), ":2:", "must be named 'other-answer.en.md'"),
])
def test_mistakes_are_located(tmp_path: Path, change: tuple[str, str], where: str,
                              said: str) -> None:
    write(tmp_path, ANSWER.replace(*change))
    found = problems(tmp_path)
    assert any(where in p and said in p for p in found), found


def test_warnings(tmp_path: Path) -> None:
    write(tmp_path, ANSWER.replace("2030-01-01", "2020-01-01"))
    write(tmp_path, ANSWER.replace("test-answer", "twin-answer").replace("TST-01", "TST-02"),
          "twin-answer.en.md")
    library = load_library(tmp_path)
    said = [str(p) for p in review(library, languages=("en", "fr"), today=dt.date(2026, 1, 1),
                                   duplicate_threshold=0.8)]
    assert any("has no 'fr' version" in w for w in said)
    assert any("was due for review on 2020-01-01" in w and ":11:" in w for w in said)
    assert any("is 100% like" in w for w in said)


def test_an_answer_needing_a_missing_field_is_not_offered(tmp_path: Path) -> None:
    write(tmp_path, ANSWER)
    (answer,) = load_library(tmp_path)
    filled = render(answer, {"customer_name": "", "case": "SAV-1", "agent_name": "Alice"})
    assert filled is not None and filled.startswith("Hello,\n") and "SAV-1" in filled
    assert render(answer, {"customer_name": "Claire", "case": "SAV-1", "agent_name": ""}) \
        is None
    suggester = Suggester(load_library(tmp_path))
    found = suggester.suggest("en", "test", "a test", {"case": "SAV-1"})
    assert found.offers == () and found.ranking.best is not None


def test_words_meet_whatever_the_accents() -> None:
    assert fold("Livrée à l'adresse") == "livree a  adresse"
    assert stems("livrée", "fr") == stems("livree", "fr") == stems("livré", "fr")
    assert stems("refunded", "en") == stems("refund", "en")
    assert stems("Bonjour, merci", "fr") == []


def test_who_signs() -> None:
    assert signing_name("alice.moreau@example.com", {}) == "Alice Moreau"
    assert signing_name("support@example.com", {}) == ""
    assert signing_name("support@example.com", {"support@example.com": "Team"}) == "Team"


COMPANION = "Hello Claire,\n\nYour parcel left today.\n\nKind regards,\nAlice Moreau\n"


def _text(raw: bytes) -> str:
    return parse_message(raw, Envelope("alice@example.com", ("answers@example.com",))).text


def test_outlook_html_reply_written_above() -> None:
    raw = (b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello Claire, it"
           b" left this morning.</p><p>Alice</p><div id=divRplyFwdMsg><hr><b>From:</b> Service"
           b" &lt;sav@example.com&gt;<br><b>Sent:</b> Thursday, December 3, 2026 10:05 AM<br>"
           b"<b>To:</b> Alice<br><b>Subject:</b> LIV-01</div><div>Hello Claire,<br><br>Your"
           b" parcel left today.</div></body></html>\r\n")
    made = agent_text(_text(raw), COMPANION)
    assert made is not None and made.how == "written"
    assert made.text == "Hello Claire, it left this morning.\n\nAlice"


def test_thunderbird_reply_left_empty_sends_the_companion() -> None:
    quoted = "\n".join(f"> {line}".rstrip() for line in COMPANION.splitlines())
    made = agent_text(f"\nOn 03/12/2026 10:05, Service wrote:\n{quoted}\n", COMPANION)
    assert made is not None and made.how == "unedited" and made.text == COMPANION.strip()


def test_a_companion_changed_in_place_goes_as_changed() -> None:
    reply = ("\n\n________________________________\nFrom: Service <sav@example.com>\nSent:"
             " Thursday, December 3, 2026 10:05 AM\nTo: Alice\nSubject: LIV-01\n\n"
             + COMPANION.replace("left today", "left yesterday"))
    made = agent_text(reply, COMPANION)
    assert made is not None and made.how == "edited in place"
    assert "left yesterday" in made.text and "From:" not in made.text


def test_the_shipped_rules_folder_copies(tmp_path: Path) -> None:
    """A copy of the shipped library loads from anywhere (paths inside the folder)."""
    shutil.copytree(RULES / "answers", tmp_path / "answers")
    assert len(load_library(tmp_path / "answers")) == len(load_library(RULES / "answers"))
