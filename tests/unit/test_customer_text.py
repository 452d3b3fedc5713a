"""The customer's own text: what `customer_text` keeps and cuts, and that it stays cheap.

Each example is a body as `Message.text` gives it (decoded, newlines ``\\n``), written
after a mail client's own shape; each asserts the exact text kept and the reasons
of the cuts, in the order of the lines. The real messages of ../shared are in
test_customer_text_corpus.py.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow import cases
from mailflow.message import Envelope, parse_message
from mailflow.message.customer_text import (
    _DISCLAIMERS,
    MAX_CHARS,
    _disclaims,
    customer_text,
    split_customer_text,
)

EXAMPLES = {
    "outlook, French": ("""Bonjour,

Je n'ai toujours pas reçu le remboursement de la commande 4821. Pouvez-vous vérifier ?

Cordialement,
Claire Martin
Tél. 06 12 34 56 78

De : Service client <sav@example.com>
Envoyé : lundi 3 juin 2024 10:02
À : Claire Martin <claire@client.test>
Objet : RE: Remboursement commande 4821

Bonjour Madame Martin,
Votre remboursement est en cours.
""", "Bonjour,\n\nJe n'ai toujours pas reçu le remboursement de la commande 4821."
        " Pouvez-vous vérifier ?", ["closing", "history"]),
    "outlook, English, rule above the header block": ("""Hello,
The replacement part still has not arrived.

________________________________
From: Customer Service <sav@example.com>
Sent: Monday, June 3, 2024 10:02 AM
To: Tom Baker <tom@customer.test>
Subject: RE: Replacement part

Dear Tom, the part was shipped today.
""", "Hello,\nThe replacement part still has not arrived.", ["history"]),
    "outlook, original message": ("""Please cancel my order.

-----Original Message-----
From: sav@example.com
Sent: Monday
Subject: Your order
Thanks for your order.
""", "Please cancel my order.", ["history"]),
    "thunderbird, answer below the quote": ("""Le 03/06/2024 à 10:02, Service client a écrit :
> Bonjour,
> pouvez-vous nous envoyer une photo du colis ?

Voici la photo, le carton est déchiré.

-- \nPaul Girard
""", "Voici la photo, le carton est déchiré.", ["attribution", "quote", "signature"]),
    "gmail, attribution wrapped": ("""Thanks, that works now.

On Mon, 3 Jun 2024 at 10:02, Customer Service <
sav@example.com> wrote:

> Dear customer,
> please restart the router.
""", "Thanks, that works now.", ["attribution", "quote"]),
    "gmail, French attribution wrapped": ("""Merci, c'est réglé.

Le lun. 3 juin 2024 à 10:02, Service client <sav@example.com> a
écrit :

> Bonjour,
""", "Merci, c'est réglé.", ["attribution", "quote"]),
    "apple mail, sent from my iPhone": ("""Where is my parcel?

Sent from my iPhone

> On 3 Jun 2024, at 10:02, Customer Service <sav@example.com> wrote:
>
> Your parcel has shipped.
""", "Where is my parcel?", ["signature"]),
    "envoyé de mon iPhone": ("Le colis est arrivé ouvert.\n\nEnvoyé de mon iPhone\n",
                             "Le colis est arrivé ouvert.", ["signature"]),
    "get outlook for android": ("Any news?\n\nGet Outlook for Android<https://aka.ms/ghei36>\n"
                                "________________________________\nFrom: SAV\nSent: Monday\n",
                                "Any news?", ["signature"]),
    "german, am … schrieb, no quote marks": ("""Hallo,

das Gerät ist immer noch defekt. Wann bekomme ich Ersatz?

Mit freundlichen Grüßen
Hans Müller

Am 03.06.2024 um 10:02 schrieb Kundendienst <sav@example.com>:

Sehr geehrter Herr Müller,
wir prüfen Ihren Fall.
""", "Hallo,\n\ndas Gerät ist immer noch defekt. Wann bekomme ich Ersatz?",
        ["closing", "history"]),
    "spanish, escribió": ("""Gracias, ya funciona.

El lun, 3 jun 2024 a las 10:02, Servicio <sav@example.com> escribió:
> Hola
""", "Gracias, ya funciona.", ["attribution", "quote"]),
    "disclaimer after a short angry line": ("""C'est inadmissible, remboursez-moi !

Ce message et toutes les pièces jointes sont confidentiels et établis à l'intention \
exclusive de ses destinataires. Toute utilisation non autorisée est interdite.
P Pensez à l'environnement avant d'imprimer ce message.
""", "C'est inadmissible, remboursez-moi !", ["disclaimer"]),
    "english disclaimer, think before you print": ("""Third time I write. Refund me.

This e-mail and any attachments are confidential and intended solely for the addressee.
P Please consider the environment - Think before you print
""", "Third time I write. Refund me.", ["disclaimer"]),
    "a gateway's banner above the text": ("""CAUTION: This email originated from outside \
of the organization. Do not click links unless you trust the sender.

My invoice is wrong, please correct it.
""", "My invoice is wrong, please correct it.", ["disclaimer"]),
    "inline reply": ("""Hello,

On Mon, 3 Jun 2024 at 10:02, Customer Service <sav@example.com> wrote:
> Could you give us your order number?
It is 4821.

> And the delivery address?
12 rue de la Paix, Paris.
""", "Hello,\n\nIt is 4821.\n\n12 rue de la Paix, Paris.", ["attribution", "quote", "quote"]),
    "a sentence beginning with From:": ("""From: the order page, I could not pay with my card.
To: whom it may concern, this is the third time.
Can you help?
""", "From: the order page, I could not pay with my card.\nTo: whom it may concern, this is"
        " the third time.\nCan you help?", []),
    "a web form's fields": ("""Nom : Sophie Roux
E-mail : sophie.roux@client-exemple.fr
Date : 3 juin 2024
Objet : Facturation

Je suis prélevée deux fois ce mois-ci, merci de rembourser le doublon.
""", "Nom : Sophie Roux\nE-mail : sophie.roux@client-exemple.fr\nDate : 3 juin 2024\n"
        "Objet : Facturation\n\nJe suis prélevée deux fois ce mois-ci, merci de rembourser"
        " le doublon.", []),
    "a sentence shaped like an attribution": ("""Bonjour,
Le 3 juin 2024, le livreur a écrit :
« colis refusé » alors que j'étais chez moi.
""", "Bonjour,\nLe 3 juin 2024, le livreur a écrit :\n« colis refusé » alors que j'étais"
        " chez moi.", []),
    "words a disclaimer also uses": ("""Hello,
I am not the intended recipient of this parcel: it was left at my door by mistake.
Avant d'imprimer ce bon de retour, dois-je le signer ?
""", "Hello,\nI am not the intended recipient of this parcel: it was left at my door by"
        " mistake.\nAvant d'imprimer ce bon de retour, dois-je le signer ?", []),
    "a closing followed by a question stays": ("""Bonjour,
Le colis est arrivé.

Cordialement,
Claire

PS : pouvez-vous m'envoyer la facture ?
""", "Bonjour,\nLe colis est arrivé.\n\nCordialement,\nClaire\n\nPS : pouvez-vous m'envoyer"
        " la facture ?", []),
    "forwarded, French": ("""Voir ci-dessous, toujours pas de réponse.

-------- Message transféré --------
Sujet : Commande 4821
De : moi
""", "Voir ci-dessous, toujours pas de réponse.", ["history"]),
    "forwarded, gmail": ("""FYI

---------- Forwarded message ---------
From: Shop <shop@example.com>
Date: Mon, Jun 3, 2024 at 10:02 AM
""", "FYI", ["history"]),
    "a quoted line wrapped by the client": ("""\
> Your parcel was handed to the carrier on Monday and should arrive
tomorrow.
> Regards

It did not arrive.
""", "It did not arrive.", ["quote"]),
    "nested quotes only": ("> > old\n> older\n", "", ["quote"]),
}


@pytest.mark.parametrize(("body", "kept", "reasons"), EXAMPLES.values(), ids=EXAMPLES.keys())
def test_examples(body: str, kept: str, reasons: list[str]) -> None:
    result = split_customer_text(body)
    assert result.text == kept
    assert [cut.reason for cut in result.cuts] == reasons
    assert customer_text(body) == kept
    assert customer_text(body.replace("\n", "\r\n")) == kept


def test_cuts_say_where_and_what() -> None:
    body = EXAMPLES["outlook, French"][0]
    closing, history = split_customer_text(body).cuts  # in the order of the lines
    lines = body.split("\n")
    assert (history.start, history.end, history.first_line) == (
        8, len(lines), "De : Service client <sav@example.com>")
    assert (closing.start, closing.end) == (4, 7)
    assert lines[closing.start:closing.end] == [
        "Cordialement,", "Claire Martin", "Tél. 06 12 34 56 78"]


def test_parsed_once_on_the_message() -> None:
    raw = ("From: Claire <claire@client.test>\r\nTo: sav@example.com\r\nSubject: Re: colis\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n"
           + EXAMPLES["thunderbird, answer below the quote"][0].replace("\n", "\r\n")).encode()
    message = parse_message(raw, Envelope(mail_from="", rcpt_to=()))
    assert message.customer_text.text == "Voici la photo, le carton est déchiré."
    assert message.customer_text is message.customer_text  # computed once
    assert cases.own_fingerprint(message.customer_text.text) == cases.fingerprint(message.text)


def test_over_the_cap_is_cut_first() -> None:
    body = "Bonjour.\n" + "x" * MAX_CHARS
    result = split_customer_text(body)
    assert len(result.text) == MAX_CHARS
    assert result.cuts[-1].reason == "over cap"


# --------------------------------------------------------------------------- hostile input

HOSTILE = {
    "50,000 quoted lines": "> a\n" * 50_000,
    "50,000 nested quote marks": ">" * 50_000,
    "a 1 MB line": "a" * 1_000_000,
    "one long 'On … wrote' line": "On " + "x " * 50_000 + "wrote:",
    "lines that open an attribution": "On a b c d e f g 2024 10:02\n" * 5_000,
    "attributions without a quote": "On 3 Jun 2024 10:02 a@b wrote:\n\n\n" * 3_000,
    "header lines": "From: a\nSent: b\n" * 5_000,
    "closings": "Cordialement,\n" * 20_000,
    "disclaimers": "\nthis email is confidential\n" * 5_000,
    "blank lines": "\n" * 200_000,
    "carriage returns": "\r" * 200_000,
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_stays_cheap(body: str) -> None:
    started = time.perf_counter()
    result = split_customer_text(body)
    assert time.perf_counter() - started < 1.0  # about 20 ms on a 2-core machine
    assert len(result.text) <= min(len(body), MAX_CHARS)


FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
#: pieces mail is made of, so that the fuzzing reaches every branch
PIECES = st.sampled_from([
    "> ", ">", "\n", "\r\n", "\r", " ", "\xa0", "-- ", "--\n", "On ", "Le ", "Am ", " wrote:",
    " a écrit :", " schrieb:", "2024", "10:02", "<a@b.c>", "From: x\n", "De : x\n",
    "Sent: y\n", "Envoyé : y\n", "Objet : z\n", "-----Original Message-----\n",
    "Sent from my iPhone\n", "Cordialement,\n", "Claire\n", "?", "ce message est confidentiel",
    "________________________________\n", "’", "e-mail", "É", "\x00", "\ud800",
])


@FUZZ
@given(st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=60).map("".join))
def test_never_raises_never_grows(body: str) -> None:
    result = split_customer_text(body)
    assert len(result.text) <= len(body)
    assert result.text == result.text.strip("\n")
    assert all(0 <= cut.start <= cut.end for cut in result.cuts)
    assert cases.fingerprint(body) == cases.own_fingerprint(result.text)


def test_not_a_string_gives_no_text() -> None:
    assert customer_text(None) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("phrase", _DISCLAIMERS)
def test_each_disclaimer_phrase_is_found_anywhere_in_a_line(phrase: str) -> None:
    assert _disclaims(f"-- {phrase}, and more --")
    assert not _disclaims(phrase[1:-1] + " " + phrase[:1])
