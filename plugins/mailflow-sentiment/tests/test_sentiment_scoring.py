"""The scorer on kinds of language, with messages of its own (none from the evaluation
set): complaints said outright, politely, by repetition or by threat; sarcasm; negation;
negative words without displeasure; misspellings and missing accents."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mailflow_sentiment import cues
from mailflow_sentiment.scoring import score_text

NEGATIVE = [
    ("fr", "Bonjour, j'ai commandé un aspirateur il y a trois semaines et je n'ai toujours"
           " aucune nouvelle. C'est très décevant."),
    ("fr", "Le lave-vaisselle fuit depuis l'installation. Votre technicien est passé deux fois"
           " sans rien réparer. J'exige un remplacement."),
    ("fr", "Franchement, je suis dégoûté. Quatre appels, et personne n'est capable de me dire"
           " où est mon colis."),
    ("fr", "Si je ne reçois pas mon remboursement avant la fin du mois, je saisis le tribunal."),
    ("fr", "Super, encore une facture erronée. Vous êtes vraiment des champions."),
    ("fr", "je suis tres mecontent du service, personne repond jamais au telephone"),
    ("fr", "Merci de m'avoir raccroché au nez ce matin. Très professionnel."),
    ("fr", "C'est la deuxième fois que je reçois un article abîmé. Je ne commanderai plus."),
    ("fr", "Ça fait un mois que j'attends ma carte de garantie. On se fiche de moi ?"),
    ("fr", "Merci beaucoup pour ce magnifique colis vide. Vraiment, bravo."),
    ("fr", "Le technicien devait venir mardi, personne n'est venu et personne ne m'a prévenue."),
    ("fr", "Je ne suis pas du tout satisfait de la réparation."),
    ("en", "I ordered a kettle three weeks ago and it still hasn't arrived. Nobody answers the"
           " phone. This is ridiculous."),
    ("en", "Brilliant. Another week, another missed delivery. Well done."),
    ("en", "If I don't hear back by Friday, I'll be contacting my credit card company to"
           " reverse the payment."),
    ("en", "Honestly, the worst customer service I've ever experienced."),
    ("en", "wtf is going on with my order?? 2 weeks and no tracking, no reply, nothing"),
    ("en", "Thanks for nothing. I'll be taking my business elsewhere."),
    ("en", "Dear Sir, your service has fallen well short of what was agreed. We expect a"
           " written explanation."),
    ("en", "Oh fantastic, the 'guaranteed' delivery didn't turn up. Again."),
    ("en", "You sent me the wrong size twice. How hard can it be?"),
    ("en", "I will be leaving a review so others know what to expect from your company."),
    ("en", "realy disapointed with the chair, it broke after a week"),
]
NOT_NEGATIVE = [
    ("fr", "Pas de souci pour le rendez-vous de jeudi, je serai présent."),
    ("fr", "Bonjour, mon imprimante affiche une erreur « bourrage papier » alors qu'il n'y a"
           " pas de papier coincé. Que dois-je faire ?"),
    ("fr", "Bonjour, ce n'est pas urgent, mais pourriez-vous m'envoyer la notice en anglais ?"),
    ("fr", "Suite à la fermeture de notre agence, nous souhaitons résilier le contrat de"
           " location du copieur. Quelle est la procédure ?"),
    ("fr", "Bonjour, je n'ai pas encore reçu le code d'activation. Pouvez-vous me le renvoyer ?"),
    ("fr", "Le colis est arrivé un peu abîmé mais le contenu est intact, rien de grave."),
    ("fr", "Je ne suis pas mécontent du tout, tout fonctionne."),
    ("fr", "Pas de panique, ce n'est pas pressé : envoyez-moi le devis quand vous pourrez."),
    ("en", "No problem at all, Tuesday works for us."),
    ("en", "Hello, I'd like to cancel my order placed this morning as I ordered the wrong"
           " colour by mistake. Sorry about that!"),
    ("en", "The printer shows error E05 after the last update. Is there a fix?"),
    ("en", "Not urgent, but could you send me the warranty terms for the standing desk?"),
    ("en", "Unfortunately we need to cancel the training booking, our engineer is ill."),
    ("en", "Amazing service, I'll definitely be ordering again."),
    ("en", "My old laptop stopped working so I'm looking for a replacement - is the X14 in"
           " stock?"),
]
POSITIVE = [
    ("fr", "Merci infiniment pour votre réactivité, le problème est réglé !"),
    ("fr", "Livraison rapide, produit conforme, je suis ravi de mon achat."),
    ("en", "Thank you so much, the issue is fixed and everything works perfectly now."),
    ("en", "Received the chairs today, great quality and delivered on time. Very happy."),
]


@pytest.mark.parametrize(("language", "text"), NEGATIVE)
def test_unhappy_customers_read_as_negative(language: str, text: str) -> None:
    mood = score_text(text, language)
    assert mood.label == "negative", mood
    assert -1 <= mood.score < 0 and mood.header().startswith("negative; score=-")


@pytest.mark.parametrize(("language", "text"), NOT_NEGATIVE)
def test_calm_mail_with_negative_words_is_not_negative(language: str, text: str) -> None:
    assert score_text(text, language).label != "negative"


@pytest.mark.parametrize(("language", "text"), POSITIVE)
def test_thanks_read_as_positive(language: str, text: str) -> None:
    mood = score_text(text, language)
    assert mood.label == "positive" and mood.score > 0, mood


def test_missing_accents_and_capitals_read_alike() -> None:
    plain = score_text("Colis toujours pas reçu. C'est inadmissible.", "fr")
    folded = score_text("colis TOUJOURS PAS RECU. c'est inadmissible", "fr")
    assert plain.label == folded.label == "negative"
    assert folded.score <= plain.score  # capitals insist


def test_the_sentence_that_weighed_most_is_kept() -> None:
    text = ("Bonjour,\n\nJe vous écris au sujet de la commande 1234.\n"
            "Trois relances et toujours aucune réponse, c'est lamentable.\n"
            "Merci de faire le nécessaire.\n")
    mood = score_text(text, "fr")
    assert mood.label == "negative"
    assert mood.sentence == "Trois relances et toujours aucune réponse, c'est lamentable."


def test_a_legal_notice_left_in_the_text_counts_for_nothing() -> None:
    text = ("Could you send me the manual of the DL-20?\n\nThis email and any attachments are"
            " confidential. If you have received it in error, any use is strictly forbidden"
            " and may be unlawful; we accept no liability for damage or loss.")
    assert score_text(text, "en").label == "neutral"


def test_no_words_no_mood() -> None:
    mood = score_text("", "fr")
    assert (mood.label, mood.score, mood.sentence) == ("neutral", 0.0, "")


def test_only_french_and_english_are_scored() -> None:
    with pytest.raises(ValueError, match="no scorer"):
        score_text("Ich bin sehr enttäuscht.", "de")


def test_a_broken_cue_is_reported_with_its_group() -> None:
    with pytest.raises(cues.CueError, match=r"group 'complaint'.*not a regular expression"):
        cues.compile_group("complaint", {"polarity": "negative", "weight": 1,
                                         "patterns": ["ok", "(unclosed"]}, "cues.fr.yaml")
    with pytest.raises(cues.CueError, match="polarity"):
        cues.compile_group("x", {"polarity": "angry", "weight": 1, "patterns": ["a"]}, "f")


def test_scoring_needs_no_network_and_no_corpus() -> None:
    """Everything the scorer reads ships in the installed packages: with every socket
    refused, it loads and scores; no NLTK or TextBlob corpus is looked for."""
    code = (
        "import socket, sys\n"
        "def refused(*a, **k): raise OSError('network refused by the test')\n"
        "socket.socket = refused; socket.create_connection = refused\n"
        "from mailflow_sentiment.scoring import score_text, warm_up\n"
        "warm_up()\n"
        "assert score_text('Toujours pas reçu, inadmissible.', 'fr').label == 'negative'\n"
        "assert score_text('Still not here. Unacceptable.', 'en').label == 'negative'\n"
        "assert not {'nltk', 'textblob', 'requests'} & set(sys.modules), sys.modules.keys()\n"
        "print('offline ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "offline ok" in run.stdout


def _sentences_to_score() -> list[tuple[str, str]]:
    """Every sentence of the evaluation set and of this file, and sentences made to test
    the shortcut's edges: no lexicon word with and without "!", "?" or "..", an emoji, an
    accented word, a word in capitals, punctuation glued to a word."""
    from mailflow_sentiment.text import sentences
    from sentiment_eval import messages

    texts = [(m["language"], m["text"]) for m in messages()]
    texts += [*NEGATIVE, *NOT_NEGATIVE, *POSITIVE]
    made = [("fr", "Commande 48213 expédiée le 3 mars"), ("fr", "Commande 48213 expédiée ?"),
            ("fr", "Et le colis, alors !!"), ("fr", "Et le colis.."), ("fr", "Le colis 🙂"),
            ("fr", "Très DÉÇU."), ("fr", "déçu"), ("fr", "(super)"), ("fr", "l'horreur"),
            ("en", "Order 48213 shipped on March 3rd"), ("en", "Order shipped??"),
            ("en", "The parcel 😡 is here"), ("en", "GREAT."), ("en", "no"), ("en", ":)")]
    return [(language, s.text) for language, text in texts for s in sentences(text)] + made


def test_a_sentence_the_library_would_score_0_is_scored_0_without_it() -> None:
    """``valence`` skips the library's pass for a sentence with no word of its lexicon:
    on every sentence it gives exactly what the library gives."""
    from mailflow_sentiment.lexicon import _no_lexicon_word, analyzer, valence

    checked = _sentences_to_score()
    skipped = 0
    for language, sentence in checked:
        library = float(analyzer(language).polarity_scores(sentence)["compound"])
        assert valence(sentence, language) == library, (language, sentence)
        skipped += _no_lexicon_word(analyzer(language), sentence, language)
    assert 0 < skipped < len(checked)  # the shortcut is taken, and not always
