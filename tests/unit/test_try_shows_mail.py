"""``mailflow try`` shows every mail a message would cause, rendered as its reader sees it:
the acknowledgement's headers and text in the language guessed (with the guess and why),
an expert's forward with the customer's message attached."""

from __future__ import annotations

import json
from pathlib import Path

from clirunner import run_cli
from conftest import REPO, full_chain_rules

FRENCH = ("From: Claire Martin <claire.martin@client-exemple.fr>\r\nTo: sav@example.com\r\n"
          "Subject: Question sur ma commande 4821\r\nMessage-ID: <q4821.1@client-exemple.fr>\r\n"
          "Content-Type: text/plain; charset=utf-8\r\n\r\n"
          "Bonjour,\r\nJe voudrais savoir où en est ma commande 4821, passée la semaine"
          " dernière. Pouvez-vous me dire quand elle sera livrée ?\r\nMerci d'avance,\r\n"
          "Claire Martin\r\n").encode()


def trial(tmp_path: Path, message: bytes, *args: str) -> tuple[str, dict[str, object]]:
    rules = full_chain_rules(tmp_path / "rules")
    path = tmp_path / "m.eml"
    path.write_bytes(message)
    common = ["try", str(path), "--rules", str(rules), "--state-dir", str(tmp_path / "s"),
              *args]
    text = run_cli(*common, cwd=REPO)
    data = run_cli(*common, "--json", cwd=REPO)
    assert text.returncode == 0 and data.returncode == 0, text.stderr
    return text.stdout, json.loads(data.stdout)


def test_the_acknowledgement_is_shown_in_french(tmp_path: Path) -> None:
    out, report = trial(tmp_path, FRENCH)
    assert "language  fr (" in out and "fr words:" in out
    (ack,) = [m for m in report["outgoing"] if m["kind"] == "ack"]  # type: ignore[union-attr]
    headers = {h["name"]: h["value"] for h in ack["headers"]}
    assert headers["To"] == "Claire Martin <claire.martin@client-exemple.fr>"
    assert headers["Subject"].endswith("Accusé de réception : Question sur ma commande 4821")
    assert headers["Auto-Submitted"] == "auto-replied"
    assert ack["text"].startswith("Bonjour Claire Martin,")
    assert "Nous vous répondrons au plus tard le" in ack["text"]
    assert "  | Bonjour Claire Martin," in out  # the terminal shows the text too
    assert "  | Subject: [" in out


def test_an_escalation_shows_its_attachment(tmp_path: Path) -> None:
    legal = FRENCH.replace(b"Question sur ma commande 4821", b"Mise en demeure").replace(
        b"Je voudrais savoir", b"Je vous mets en demeure de me dire")
    _, report = trial(tmp_path, legal)
    kinds = {m["kind"]: m for m in report["outgoing"]}  # type: ignore[union-attr]
    assert "escalation" in kinds and kinds["escalation"]["attachments"] == ["message/rfc822"]
