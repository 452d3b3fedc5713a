"""The message model over ../shared/corpus: each sample parses as its index says.

Collected only where ../shared exists (see tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML
from test_message import ENV, FUZZ, check_invariants, mutate, parsed_both_ways

from conftest import CORPUS, REALMAIL
from mailflow.message import Envelope, Message, parse_message

CORPUS_FILES = sorted(CORPUS.glob("*.eml"))


def _index() -> dict[str, dict[str, Any]]:
    data = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    return {entry["file"]: entry for entry in data["messages"]}


def corpus(name: str) -> Message:
    """Parse a corpus file with the envelope index.yaml gives it."""
    entry = _index()[name]
    envelope = Envelope(mail_from=entry["mail_from"], rcpt_to=tuple(entry["rcpt_to"]))
    return parse_message((CORPUS / name).read_bytes(), envelope)


# --------------------------------------------------------------------------- corpus


def test_index_lists_every_corpus_file() -> None:
    assert set(_index()) == {p.name for p in CORPUS_FILES}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_message_parses_cleanly(path: Path) -> None:
    raw = path.read_bytes()
    msg = corpus(path.name)
    check_invariants(msg, raw)
    assert msg.envelope.rcpt_to
    assert msg.subject and msg.message_id and msg.text
    assert msg.addresses("From")
    assert msg.raw is raw or msg.raw == raw
    # The body starts right after the first blank line, whatever the line endings.
    head = raw[: msg.header_bytes_len]
    assert head.endswith((b"\r\n\r\n", b"\n\n"))
    assert head.count(b"\n\n") + head.count(b"\r\n\r\n") == 1


def test_subject_latin1_encoded_words_keep_accents() -> None:
    msg = corpus("fr_subject_latin1_encoded.eml")
    assert msg.subject == "Colis reçu abîmé - remboursement ?"
    assert msg.get("from") == "Jérôme Dupré <jerome.dupre@exemple.net>"
    assert msg.addresses("From") == ["jerome.dupre@exemple.net"]
    assert "le colis est arrivé abîmé, le carton était ouvert" in msg.text
    assert "Je souhaite être remboursé." in msg.text  # QP soft line break joined
    assert msg.message_id == "abime.7@exemple.net"
    assert msg.defects == []


def test_cp1252_base64_body_decoded() -> None:
    msg = corpus("fr_cp1252_base64_devis_signe.eml")
    assert "devis signé" in msg.text
    assert "bon pour accord" in msg.text
    assert msg.text.endswith("François Lefèvre")
    # Plain text followed by an encoded word: the space between them stays.
    assert msg.subject == "Devis D-118 signé"
    assert msg.get("From") == "François Lefèvre <f.lefevre@pme-exemple.fr>"
    assert msg.envelope.rcpt_to == ("devis@example.com",)
    assert msg.defects == []


def test_html_only_body_reduced_to_text_with_entities() -> None:
    msg = corpus("fr_html_only_accident.eml")
    assert msg.content_type == "text/html"
    assert "accident" in msg.text
    # &agrave; &#39; and &eacute; decoded; <p> paragraphs become blank-line separated.
    assert msg.text == (
        "Bonjour,\n\nSuite à l'accident survenu lors de la livraison, "
        "notre portail est endommagé. Merci de nous rappeler."
    )
    assert "<" not in msg.text and "&" not in msg.text
    assert msg.subject == "Dégâts lors de la livraison"
    assert msg.get("From") == "Syndic Résidence Les Pins <syndic@lespins-exemple.fr>"


def test_raw_8bit_headers_and_body_decoded() -> None:
    msg = corpus("raw_8bit_no_charset.eml")
    assert msg.subject == "Problème urgent"
    assert msg.get("From") == "Gérard <gerard@client-exemple.fr>"
    assert msg.text == "Le produit ne fonctionne plus, c'est très urgent."
    assert "urgent" in msg.subject and "urgent" in msg.text
    assert msg.content_type == "text/plain"  # no MIME headers at all
    assert any("windows-1252" in d for d in msg.defects)
    # The 8-bit bytes are kept as they came, for the relay.
    assert msg.headers[0].raw == b"From: G\xe9rard <gerard@client-exemple.fr>"


def test_broken_mime_gives_text_and_defects() -> None:
    msg = corpus("broken_mime.eml")
    assert msg.content_type == "multipart/alternative"
    # unknown-8bit -> windows-1252; bad QP "=ZZ" kept literally; soft break joined.
    assert msg.text == "Café renversé sur le colis =ZZ invalide"
    assert "pas de fin de boundary" not in msg.text  # the HTML alternative is not read
    assert msg.subject == "Café"  # unknown charset 'utf8x' in the encoded word
    joined = "\n".join(msg.defects)
    for expected in ("'utf8x'", "unterminated multipart", "quoted-printable", "'unknown-8bit'"):
        assert expected in joined


def test_bounce_is_multipart_report() -> None:
    msg = corpus("bounce_dsn.eml")
    assert msg.content_type == "multipart/report"
    assert msg.envelope.mail_from == ""
    assert "could not be delivered" in msg.text
    assert "Reporting-MTA" not in msg.text  # application/delivery-status is not text
    assert msg.addresses("From") == ["mailer-daemon@mx.client-exemple.fr"]
    assert msg.get("auto-submitted") == "auto-replied"


def test_long_folded_headers() -> None:
    msg = corpus("long_header.eml")
    assert msg.subject.split() == ["Demande", *(f"mot{i}" for i in range(400))]
    assert "  " not in msg.subject
    subject = next(h for h in msg.headers if h.name == "Subject")
    assert subject.raw.count(b"\n ") == 35  # folding kept in raw
    # 80 adjacent encoded words: the folding whitespace between them disappears.
    assert msg.get("X-Long") == "x" * 5000
    assert msg.text == "Corps court."
    assert msg.message_id == "long.anne@client-exemple.fr"
    assert msg.defects == []


def test_pdf_attachment_contributes_no_text() -> None:
    msg = corpus("fr_attachment_pdf.eml")
    assert msg.content_type == "multipart/mixed"
    assert msg.text == "Bonjour, ci-joint la facture contestée."
    assert msg.subject == "Facture en pièce jointe"
    assert msg.defects == []


def test_qp_soft_breaks_inside_utf8_sequences() -> None:
    msg = corpus("fr_question_sav.eml")
    assert "je n'ai reçu aucune confirmation d'expédition." in msg.text  # "re=C3=\n=A7u"
    assert "(n° 4821)" in msg.text
    assert "une procédure." in corpus("fr_litige_urgent.eml").text
    assert "Could you check?" in corpus("en_question.eml").text


def test_duplicates_share_message_id() -> None:
    a = corpus("duplicate_copy_a.eml")
    b = corpus("duplicate_copy_b.eml")
    assert a.message_id == b.message_id == "double.marc@client-exemple.fr"
    assert a.get("From") == "Marc Noël <marc.noel@client-exemple.fr>"
    assert a.addresses("To") == ["sav@example.com", "contact@example.com"]
    assert b.envelope.rcpt_to == ("contact@example.com",)


def test_headers_stages_rely_on() -> None:
    form = corpus("webform_facturation.eml")
    assert form.addresses("Reply-To") == ["sophie.roux@client-exemple.fr"]
    assert "Catégorie : Facturation" in form.text
    followup = corpus("followup_in_reply_to_ack.eml")
    assert followup.get("In-Reply-To") == "<ACK-MESSAGE-ID>"
    assert followup.get_all("references") == ["<q4821.1@client-exemple.fr> <ACK-MESSAGE-ID>"]
    assert corpus("followup_subject_tag.eml").subject.startswith("RE: TR: [CASE-NUMBER]")
    news = corpus("list_newsletter.eml")
    assert news.subject == "Nos offres de fin d'année"
    assert news.get("List-Id") == "Offres <offres.fournisseur-exemple.fr>"
    assert news.get("precedence") == "bulk"
    assert "promotions urgentes" in news.text
    assert corpus("ms_auto_response_suppress.eml").subject == "Ticket INC0012 mis à jour"
    assert corpus("ms_auto_response_suppress.eml").get("X-Auto-Response-Suppress") == "All"
    assert corpus("ooo_auto_replied.eml").subject == "Réponse automatique : absente du bureau"
    assert corpus("noreply_sender.eml").addresses("from") == ["no-reply@plateforme-exemple.com"]
    assert "furieux" in corpus("fr_client_mecontent.eml").text
    assert "garantie légale de conformité" in corpus("fr_juridique_expert.eml").text



@FUZZ
@given(
    st.sampled_from(CORPUS_FILES),
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=1, max_value=12),
)
def test_never_raises_on_mutated_corpus(path: Path, seed: int, count: int) -> None:
    raw = mutate(path.read_bytes(), seed, count)
    check_invariants(parse_message(raw, ENV), raw)


def test_every_shared_message_parses_as_the_stdlib_parses_it() -> None:
    """mime.parse_tree reads a one-payload body without the stdlib's line reader: the
    same message comes out for every sample of the corpus and of the real mail."""
    samples = [p for folder in (CORPUS, REALMAIL, REALMAIL.with_name("realmail2"))
               if folder.is_dir() for p in sorted(folder.iterdir())
               if p.is_file() and p.suffix != ".md" and p.name != "index.yaml"]
    assert len(samples) > 900
    single = 0
    for path in samples:
        shipped, full = parsed_both_ways(path.read_bytes())
        assert shipped == full, path.name
        single += not shipped.content_type.startswith(("multipart/", "message/"))
    assert single > 300  # the shortcut was taken, and checked, that often
