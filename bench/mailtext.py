"""What the benchmark's customers write: French and English sentence banks, composed.

Kept apart from the MIME and the mix (mailgen.py) so the wording can grow without
touching either. The banks of ordinary mail must not hold a word the shipped rules
score (rules/prioritise.yaml, route.yaml, escalate.yaml): only URGENT and LEGAL do,
on purpose. tests/unit/test_mailgen.py checks it against the rules themselves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from mailpeople import CARRIERS, CITIES, EN, FR, PRODUCTS, STREETS, slug

#: topic -> (mailbox of the French customers, of the English ones)
MAILBOXES = {
    "delivery": ("sav@example.com", "support@example.com"),
    "damaged": ("sav@example.com", "sav@example.com"),
    "invoice": ("contact@example.com", "support@example.com"),
    "quote": ("devis@example.com", "devis@example.com"),
    "product": ("contact@example.com", "support@example.com"),
    "account": ("contact@example.com", "contact@example.com"),
}

#: topic -> language -> (subjects, openings, details, requests)
TOPICS: dict[str, dict[str, tuple[list[str], list[str], list[str], list[str]]]] = {
    "delivery": {
        FR: (["Commande {order} non reçue", "Où en est ma commande {order} ?",
              "Retard de livraison, commande {order}", "Suivi du colis {order}",
              "Livraison {of_product} toujours en attente"],
             ["J'ai passé commande le {date} ({order}) pour {product} et je n'ai toujours "
              "rien reçu.",
              "Le suivi {carrier} de ma commande {order} indique « en cours d'acheminement » "
              "depuis le {date}.",
              "Ma commande {order} devait être livrée le {date}, mais personne n'est passé."],
             ["Le numéro de suivi ne donne plus aucune information depuis {days} jours.",
              "J'étais pourtant chez moi toute la journée et aucun avis de passage n'a été laissé.",
              "Mon adresse de livraison est bien : {street}, {zip} {city}.",
              "J'ai réglé {amount} par carte bancaire au moment de la commande.",
              "Le point relais de {city} me dit ne pas avoir reçu le colis."],
             ["Pourriez-vous me dire quand je peux espérer recevoir mon colis ?",
              "Merci de me tenir informé de la date de livraison prévue.",
              "Si le colis est perdu, je souhaiterais un nouvel envoi ou un remboursement."]),
        EN: (["Order {order} not received", "Where is my order {order}?",
              "Late delivery for order {order}", "Tracking for parcel {order}"],
             ["I placed order {order} on {date} for {product} and nothing has arrived yet.",
              "The {carrier} tracking for order {order} has said 'in transit' since {date}.",
              "My order {order} was due on {date}, but no courier came."],
             ["The tracking number has shown no update for {days} days.",
              "I was at home all day and no card was left.",
              "My delivery address is {street}, {city} {zip}.",
              "I paid {amount} by card when I ordered."],
             ["Could you tell me when I can expect the parcel?",
              "Please let me know the new delivery date.",
              "If the parcel is lost, I would like it sent again or a refund."]),
    },
    "damaged": {
        FR: (["Produit arrivé abîmé, commande {order}", "Demande de retour pour {product}",
              "Échange {of_product}", "{product} en panne", "Réparation {of_product}"],
             ["J'ai bien reçu {product} hier, mais le carton était enfoncé et l'appareil est "
              "rayé sur le côté.",
              "Je souhaite retourner {product} reçu le {date} : la taille ne convient pas.",
              "{product} ne fonctionne plus depuis {days} jours alors que l'achat date de "
              "moins d'un an."],
             ["Je joins des photos du colis et du produit.",
              "L'appareil s'allume puis s'éteint au bout de quelques secondes.",
              "Le produit est encore sous garantie d'après ma facture {invoice}.",
              "J'ai conservé l'emballage d'origine et tous les accessoires."],
             ["Comment dois-je procéder pour le retour ?",
              "Faut-il imprimer une étiquette de retour ?",
              "Je préférerais un échange plutôt qu'un avoir.",
              "Pouvez-vous organiser l'enlèvement à domicile ?"]),
        EN: (["Damaged item, order {order}", "Return request for {product}",
              "Exchange for {product}", "{product} stopped working"],
             ["{product} arrived yesterday, but the box was crushed and the side is scratched.",
              "I would like to return {product}, received on {date}: it is the wrong size.",
              "{product} has not worked for {days} days and it is less than a year old."],
             ["I have attached photos of the parcel and the item.",
              "It switches on and then off again after a few seconds.",
              "According to invoice {invoice} it is still under warranty.",
              "I kept the original packaging and all the accessories."],
             ["How do I send it back?", "Do I need to print a return label?",
              "I would prefer an exchange to a credit note.",
              "Can you arrange a collection from my home?"]),
    },
    "invoice": {
        FR: (["Facture {invoice}", "Demande de facture, commande {order}",
              "Erreur sur la facture {invoice}", "Double prélèvement, commande {order}"],
             ["Je n'ai pas reçu la facture de ma commande {order} du {date}.",
              "Sur la facture {invoice}, le montant indiqué ({amount}) ne correspond pas au prix "
              "affiché lors de la commande.",
              "J'ai été débité deux fois de {amount} pour la même commande {order}."],
             ["Mon relevé bancaire montre deux opérations identiques le {date}.",
              "Le code promotionnel n'a pas été appliqué lors du paiement.",
              "La facture doit porter le nom de ma société, {company}.",
              "Notre comptabilité a besoin du document avant la fin du mois."],
             ["Pourriez-vous m'envoyer une facture au nom de ma société ?",
              "Merci de corriger la facture et de me la renvoyer.",
              "Pouvez-vous rembourser le prélèvement en double ?"]),
        EN: (["Invoice {invoice}", "Invoice needed for order {order}",
              "Wrong amount on invoice {invoice}", "Charged twice for order {order}"],
             ["I have not received the invoice for order {order} of {date}.",
              "Invoice {invoice} shows {amount}, which is not the price shown when I ordered.",
              "My card was charged {amount} twice for the same order {order}."],
             ["My bank statement shows two identical payments on {date}.",
              "The discount code was not applied at checkout.",
              "The invoice should be made out to my company, {company}."],
             ["Could you send me an invoice in my company's name?",
              "Please correct the invoice and send it again.",
              "Could you refund the second payment?"]),
    },
    "quote": {
        FR: (["Demande de devis : {product}", "Devis pour {qty} {product}",
              "Demande de tarif professionnel", "Devis livraison et installation à {city}"],
             ["Nous souhaiterions obtenir un devis pour {qty} {product}, livraison à {city}.",
              "Pour l'aménagement de nos locaux, nous cherchons un fournisseur pour {product}.",
              "Pourriez-vous m'établir un devis pour {product} avec installation ?"],
             ["La livraison serait à prévoir pour la semaine du {date}.",
              "Nous aurions besoin de connaître les délais et les conditions de paiement.",
              "Une remise est-elle possible à partir de {qty} unités ?",
              "Le bâtiment dispose d'un quai de déchargement et d'un monte-charge."],
             ["Merci de m'envoyer votre meilleure proposition.",
              "Le devis peut être adressé à {company}, à l'attention de {name}."]),
        EN: (["Quote request: {product}", "Quote for {qty} {product}",
              "Trade prices for {company}"],
             ["We would like a quote for {qty} {product}, delivered to {city}.",
              "We are fitting out new offices and are looking for a supplier of {product}."],
             ["Delivery would be the week of {date}.",
              "Please include lead times and payment terms.",
              "Is there a discount from {qty} units?"],
             ["Please send us your best offer.",
              "The quote can be addressed to {company}, for the attention of {name}."]),
    },
    "product": {
        FR: (["Question sur {product}", "Renseignement avant achat : {product}",
              "Compatibilité {of_product}", "Disponibilité {of_product}"],
             ["Je m'intéresse {to_product} vu sur votre site.",
              "Avant de commander {product}, j'aurais quelques questions."],
             ["Quelles sont les dimensions exactes une fois monté ?",
              "Est-il compatible avec le modèle que j'ai acheté chez vous en {year} ?",
              "Le site indique un délai de {days} jours, est-ce toujours d'actualité ?",
              "Existe-t-il une version dans un autre coloris ?"],
             ["Merci par avance pour ces précisions.",
              "Pouvez-vous me dire s'il sera de nouveau en stock prochainement ?"]),
        EN: (["Question about {product}", "Before I buy: {product}",
              "Is {product} in stock?"],
             ["I am interested in {product} on your website.",
              "Before ordering {product} I have a few questions."],
             ["What are the exact dimensions once assembled?",
              "Does it work with the model I bought from you in {year}?",
              "The site says {days} days for delivery, is that still right?"],
             ["Thanks in advance for the details.",
              "Could you tell me when it will be back in stock?"]),
    },
    "account": {
        FR: (["Changement d'adresse de livraison", "Modification de ma commande {order}",
              "Accès à mon compte client", "Mise à jour de mes coordonnées"],
             ["Je viens de déménager et ma commande {order} risque d'être livrée à "
              "l'ancienne adresse.",
              "Je n'arrive plus à me connecter à mon compte client depuis le {date}.",
              "J'aimerais ajouter un article à ma commande {order} avant son expédition."],
             ["Ma nouvelle adresse est : {street}, {zip} {city}.",
              "Le lien de réinitialisation du mot de passe n'arrive jamais.",
              "Il s'agit {of_product}, en un exemplaire."],
             ["Pouvez-vous mettre à jour mon dossier ?",
              "Merci de me confirmer la prise en compte de la modification."]),
        EN: (["Change of delivery address", "Change to order {order}",
              "Cannot log in to my account"],
             ["I have just moved and order {order} may go to my old address.",
              "I have not been able to log in to my account since {date}."],
             ["My new address is {street}, {city} {zip}.",
              "The password reset e-mail never arrives."],
             ["Could you update my details?", "Please confirm the change."]),
    },
}

GREETINGS = {FR: ["Bonjour,", "Bonjour Madame, Monsieur,", "Madame, Monsieur,", "Bonsoir,"],
             EN: ["Hello,", "Hi,", "Dear Sir or Madam,", "Good morning,"]}
SIGNOFFS = {FR: ["Cordialement,", "Bien cordialement,", "Bonne journée,", "Merci d'avance,"],
            EN: ["Kind regards,", "Best regards,", "Many thanks,", "Regards,"]}
CLOSINGS = {FR: ["Dans l'attente de votre réponse.", "Merci pour votre aide.",
                 "Je reste joignable par téléphone si besoin."],
            EN: ["I look forward to hearing from you.", "Thank you for your help.",
                 "You can also reach me by phone."]}
#: more of the customer's story: what pads a message to its size
CONTEXT = {
    FR: ["Je suis client chez vous depuis {year} et je n'ai jamais eu de souci jusqu'ici.",
         "J'ai essayé de joindre le service client par téléphone mais la ligne était occupée.",
         "Il s'agit d'un cadeau pour l'anniversaire de ma fille le {date}.",
         "Je travaille en journée, le plus simple est de me répondre par courriel.",
         "Ma voisine a commandé le même article la même semaine et l'a déjà reçu.",
         "J'ai vérifié mes courriers indésirables, rien n'y est arrivé de votre part.",
         "Le montant de {amount} n'est pas négligeable pour nous.",
         "J'ai aussi laissé un message sur votre page de contact, sans réponse pour l'instant.",
         "Le livreur m'a conseillé de m'adresser directement à vous.",
         "Je peux vous transmettre le bon de commande si nécessaire.",
         "Je précise que j'ai bien suivi la notice de montage.",
         "Nous avons déjà commandé {product} chez vous l'an dernier et en sommes satisfaits.",
         "Je vous remercie de l'attention que vous porterez à ma demande."],
    EN: ["I have been a customer since {year} and never had a problem before.",
         "I tried to call customer service but the line was busy.",
         "It is a birthday present for my daughter on {date}.",
         "I work during the day, so e-mail is the easiest way to reach me.",
         "A neighbour ordered the same item the same week and already has it.",
         "I checked my spam folder and nothing from you is there.",
         "{amount} is not a small sum for us.",
         "I also left a message through your contact page but have had no answer.",
         "The courier told me to get in touch with you directly.",
         "I can send you the order confirmation if that helps.",
         "Thank you for taking the time to look into this.",
         "I did follow the assembly instructions carefully.",
         "We bought {product} from you last year and were happy with it."],
}
#: an agent's earlier answer, quoted below the customer's text
AGENT = {
    FR: ["Nous avons bien reçu votre demande et l'avons transmise au service concerné.",
         "Votre commande {order} a été expédiée le {date} par {carrier}.",
         "Pourriez-vous nous envoyer une photo du produit et votre numéro de commande ?",
         "Nous revenons vers vous dès que nous avons un retour du transporteur.",
         "Un avoir de {amount} a été émis sur votre compte client.",
         "Nous avons relancé {carrier}, qui nous annonce une livraison sous {days} jours.",
         "Votre dossier est suivi par notre équipe, qui vous recontactera.",
         "Nous vous remercions de votre patience et restons à votre disposition."],
    EN: ["We have received your request and passed it on to the right team.",
         "Your order {order} was shipped on {date} with {carrier}.",
         "Could you send us a photo of the item and your order number?",
         "We will get back to you as soon as we hear from the carrier.",
         "A credit of {amount} has been added to your customer account.",
         "We have chased {carrier}, who expect to deliver within {days} days.",
         "Our team is handling your request and will contact you.",
         "Thank you for your patience; we remain at your disposal."],
}
FOLLOWUP = {
    FR: ["Je me permets de vous relancer au sujet de ma demande du {date}.",
         "Je n'ai toujours pas de nouvelles depuis mon dernier message.",
         "Je complète mon message précédent : {detail}",
         "Avez-vous pu avancer sur mon dossier ?"],
    EN: ["I am following up on my request of {date}.",
         "I still have not heard back since my last message.",
         "To add to my previous message: {detail}",
         "Have you been able to look into this?"],
}
URGENT = {
    FR: ["C'est la troisième fois que je vous écris, c'est inadmissible.",
         "J'ai besoin de ce produit au plus vite.", "Je trouve ce service inacceptable.",
         "Merci de traiter ma demande en urgence."],
    EN: ["This is urgent.", "Frankly, this is unacceptable.",
         "Please sort this out as soon as possible."],
}
URGENT_SUBJECT = {FR: ["URGENT : {s}", "Inadmissible : {s}", "{s} (urgent)"],
                  EN: ["URGENT: {s}", "Unacceptable: {s}", "{s} - urgent"]}
#: escalate.yaml's legal-notice rule: French only (its keywords are French)
LEGAL = ["Sans solution de votre part sous huit jours, je transmettrai le dossier à mon avocat.",
         "Par la présente, je vous mets en demeure de me rembourser la somme de {amount}.",
         "À défaut de réponse, je saisirai le tribunal compétent."]
LEGAL_SUBJECT = ["Mise en demeure, commande {order}", "Dernier rappel avant tribunal : {order}"]
DISCLAIMER = {
    FR: "Ce message et ses pièces jointes sont confidentiels et réservés à l'usage de leurs "
        "destinataires. Si vous l'avez reçu par erreur, merci d'en avertir l'expéditeur et de "
        "le supprimer. Pensez à l'environnement avant d'imprimer ce message.",
    EN: "This e-mail and any attachments are confidential and intended solely for the "
        "addressee. If you have received it in error, please tell the sender and delete it.",
}
MOBILE = {FR: "Envoyé de mon iPhone", EN: "Sent from my iPhone"}
REPLY_PREFIXES = {FR: ["Re: {s}", "RE: {s}", "Re: {s} (relance)", "Relance : {s}",
                       "Re: {s} - toujours en attente"],
                  EN: ["Re: {s}", "RE: {s}", "Re: {s} (chasing)", "Chasing: {s}",
                       "Re: {s} - still waiting"]}
ZONES = {FR: ZoneInfo("Europe/Paris"), EN: ZoneInfo("Europe/London")}
MONTHS = {FR: ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
               "septembre", "octobre", "novembre", "décembre"],
          EN: ["January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December"]}


@dataclass
class Facts:
    """One customer's story: the same order, product and amount in all their mail."""

    language: str
    name: str
    company: str
    slots: dict[str, str] = field(default_factory=dict)

    def fill(self, template: str, **more: str) -> str:
        return template.format_map({**self.slots, **more})


def a_date(rng: random.Random, language: str) -> str:
    day, month = rng.randint(1, 28), rng.choice(MONTHS[language])
    return f"{day} {month}" if language == FR else f"{month} {day}"


def day_text(when: datetime, language: str) -> str:
    month = MONTHS[language][when.month - 1]
    return f"{when.day} {month}" if language == FR else f"{month} {when.day}"


def facts(rng: random.Random, language: str, name: str, company: str) -> Facts:
    city, postcode = rng.choice(CITIES[language])
    euros = rng.randint(19, 2400)
    cents = rng.choice((0, 90, 99, 50, rng.randint(1, 98)))
    amount = f"{euros},{cents:02d} €" if language == FR else f"£{euros}.{cents:02d}"
    order = rng.choice(("CMD-2026-{:06d}", "n° {:07d}", "#{:08d}", "WEB{:07d}")).format(
        rng.randint(1000, 9_999_999))
    product = rng.choice(PRODUCTS[language])
    return Facts(language, name, company, {
        "order": order, "invoice": f"FA-{rng.randint(2024, 2026)}-{rng.randint(1, 99999):05d}",
        "product": product, "of_product": contracted("de", product),
        "to_product": contracted("à", product), "date": a_date(rng, language),
        "amount": amount, "carrier": rng.choice(CARRIERS), "city": city, "zip": postcode,
        "street": rng.choice(STREETS[language]).format(n=rng.randint(1, 140)),
        "days": str(rng.randint(3, 21)), "qty": str(rng.choice((2, 4, 5, 10, 12, 20, 50))),
        "year": str(rng.randint(2012, 2024)), "company": company or name, "name": name})


def contracted(word: str, product: str) -> str:
    """French ``de``/``à`` before an article: ``du lave-linge``, ``aux chaises``,
    ``de la table``."""
    merged = {("de", "le"): "du", ("de", "les"): "des", ("à", "le"): "au", ("à", "les"): "aux"}
    article, _, rest = product.partition(" ")
    if (word, article) in merged:
        return f"{merged[word, article]} {rest}"
    return f"{word} {product}"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def customer_text(rng: random.Random, who: Facts, topic: str, kind: str
                  ) -> tuple[str, list[str]]:
    """(subject, paragraphs before the sign-off) of a new message of ``kind``."""
    subjects, openings, details, requests = TOPICS[topic][who.language]
    subject = capitalise(who.fill(rng.choice(subjects)))
    body = [capitalise(who.fill(rng.choice(openings)))]
    body += [who.fill(line) for line in rng.sample(details, k=min(len(details),
                                                                  rng.randint(1, 3)))]
    if kind == "urgent":
        body.insert(1, rng.choice(URGENT[who.language]))
        subject = rng.choice(URGENT_SUBJECT[who.language]).format(s=subject)
    elif kind == "legal":
        body.append(who.fill(rng.choice(LEGAL)))
        subject = who.fill(rng.choice(LEGAL_SUBJECT))
    paragraphs = [rng.choice(GREETINGS[who.language]), " ".join(body)]
    paragraphs += [who.fill(rng.choice(requests)) + " " + rng.choice(CLOSINGS[who.language])]
    return subject, paragraphs


def followup_text(rng: random.Random, who: Facts, topic: str) -> list[str]:
    details = TOPICS[topic][who.language][2]
    line = rng.choice(FOLLOWUP[who.language])
    return [rng.choice(GREETINGS[who.language]),
            who.fill(line, detail=who.fill(rng.choice(details)), date=a_date(rng, who.language)),
            rng.choice(CLOSINGS[who.language])]


def signoff(rng: random.Random, who: Facts, phone: str) -> list[str]:
    """Sign-off and signature: a mobile's one line, or a name and phone block (a company's
    with its address and, often, its disclaimer)."""
    lines = [rng.choice(SIGNOFFS[who.language]), who.name]
    if rng.random() < 0.25:
        return [*lines, MOBILE[who.language]]
    if not who.company:
        return [lines[0], f"-- \n{who.name}\n{phone}"]
    block = [lines[0], f"-- \n{who.name}\n{phone}\n{who.company}\n{who.slots['street']}"]
    return block + ([DISCLAIMER[who.language]] if rng.random() < 0.6 else [])


def deck(rng: random.Random, who: Facts, bank: dict[str, list[str]]) -> Iterator[str]:
    """The bank's sentences for ``who`` in a shuffled order, each once before any comes
    again: a long message does not say the same thing twice in a row."""
    lines = list(bank[who.language])
    while True:
        rng.shuffle(lines)
        yield from (who.fill(line) for line in lines)


def when_text(when: datetime, language: str) -> str:
    """``2 mars 2026 à 09:13`` / ``2 March 2026 at 09:13``, as a client's quote line."""
    month = MONTHS[language][when.month - 1]
    joiner = "à" if language == FR else "at"
    return f"{when.day} {month} {when.year} {joiner} {when:%H:%M}"


def attribution(language: str, when: datetime, who: str) -> str:
    """The line a mail client writes above the message it quotes."""
    said = when_text(when.astimezone(ZONES[language]), language)
    return f"Le {said}, {who} a écrit :" if language == FR else f"On {said}, {who} wrote:"


def invoice_lines(rng: random.Random, who: Facts) -> list[str]:
    """An invoice's lines, for a PDF attachment: reference, article, quantity, price."""
    products = [slug(product, " ") for product in PRODUCTS[who.language]]
    return [f"Ref. {rng.randint(10000, 99999)}   {rng.choice(products)}   "
            f"{rng.randint(1, 9)} x {rng.randint(5, 900)},{rng.randint(0, 99):02d} EUR"
            for _ in range(40)]
