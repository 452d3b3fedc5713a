"""``mailflow try`` on the corpus's French question shows the acknowledgement it would
send, rendered (collected only where ../shared exists: see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from test_try_shows_mail import trial

from conftest import CORPUS


def test_the_corpus_french_question(tmp_path: Path) -> None:
    out, report = trial(tmp_path, (CORPUS / "fr_question_sav.eml").read_bytes(),
                        "--mail-from", "claire.martin@client-exemple.fr", "--rcpt-to",
                        "sav@example.com")
    assert "outbox    ack to claire.martin@client-exemple.fr" in out
    assert "language  fr (" in out
    assert "  | Nous avons bien reçu votre message du" in out
    assert "  | Subject: [SAV-" in out and "Accusé de réception" in out
    (ack,) = [m for m in report["outgoing"] if m["kind"] == "ack"]  # type: ignore[union-attr]
    assert ack["text"].startswith("Bonjour Claire Martin,")
