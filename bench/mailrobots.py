"""The automatic mail in the benchmark's traffic: out-of-office replies, delivery
reports, newsletters.

mailflow must never acknowledge them (RFC 3834 and the shipped robot tables), yet
each costs it a parse, a direction and a pass through the chain like any other, so
real traffic has them. Built as mailgen.py builds customer mail: a Draft that grows
to the target size.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from mailmime import HTML_FROM, Draft, Padding, Part, Text, address, header, message, text_part
from mailpeople import CITIES, EN, FR, PRODUCTS, slug
from mailtext import AGENT, Facts, day_text, deck, facts

if TYPE_CHECKING:
    from mailgen import Generator

KINDS = frozenset({"auto-reply", "bounce", "newsletter"})
SERVICE = ["sav@example.com", "contact@example.com", "devis@example.com", "support@example.com"]
#: what the service sent that the robot answers
SENT = {FR: ["Re: Votre commande {order}", "Votre facture {invoice}", "Re: Votre demande de devis",
             "Votre colis {order} a été expédié"],
        EN: ["Re: Your order {order}", "Your invoice {invoice}", "Your parcel {order} has shipped"]}
AWAY_SUBJECT = {FR: ["Réponse automatique : {s}", "Absent du bureau : {s}", "Absence : {s}"],
                EN: ["Automatic reply: {s}", "Out of Office: {s}", "Auto: {s}"]}
AWAY = {FR: ["Je suis absent du bureau du {start} au {end} inclus, avec un accès limité à ma "
             "messagerie.", "Pour toute demande, vous pouvez joindre l'accueil au {phone}.",
             "Votre message ne sera pas transféré ; je le traiterai à mon retour."],
        EN: ["I am out of the office from {start} to {end} with limited access to e-mail.",
             "For anything that cannot wait, please call reception on {phone}.",
             "Your message will not be forwarded; I will read it when I am back."]}
FAILED_SUBJECT = {FR: ["Non remis : {s}", "Échec de la remise : {s}"],
                  EN: ["Undeliverable: {s}", "Undelivered Mail Returned to Sender: {s}"]}
EXPLAIN = ("This is the mail system at host {host}.\n\nI'm sorry to have to inform you that "
           "your message could not be delivered to one or more recipients. It's attached "
           "below.\n\n<{rcpt}>: host {host}[203.0.113.25] said: 550 5.1.1 <{rcpt}>: "
           "Recipient address rejected: User unknown in virtual mailbox table")
BRANDS = ["Maison", "Atelier", "Jardin", "Brico", "Déco", "Cuisine", "Bureau", "Confort"]
PROMO = {FR: ["Jusqu'à -{pct} % sur {product} jusqu'à dimanche soir.",
              "Livraison offerte dès {price} € d'achat avec le code LIVRAISON.",
              "Découvrez notre sélection de printemps : {product} à partir de {price} €.",
              "Nos conseillers vous accueillent du lundi au samedi dans nos magasins.",
              "Nouveau : {product}, disponible en trois coloris dès {price} €.",
              "Profitez du paiement en quatre fois sans frais à partir de {price} €.",
              "Retrouvez nos idées d'aménagement et nos tutoriels sur notre blog.",
              "Votre avis compte : notez vos derniers achats et gagnez un bon de {pct} €."],
         EN: ["Up to {pct}% off {product} until Sunday night.",
              "Free delivery on orders over £{price} with code FREEDEL.",
              "New this spring: {product} from £{price}.",
              "Spread the cost: pay in three instalments on orders over £{price}.",
              "Read our guides and design ideas on the blog.",
              "Rate your recent purchases and win a £{pct} voucher."]}
FOOTER = {FR: "Vous recevez ce message car vous êtes inscrit à la lettre d'information de "
              "{brand}. Pour ne plus la recevoir : {link}",
          EN: "You receive this e-mail because you subscribed to the {brand} newsletter. "
              "Unsubscribe: {link}"}


def build(g: Generator, kind: str) -> Draft:
    if kind == "auto-reply":
        return out_of_office(g)
    return bounce(g) if kind == "bounce" else newsletter(g)


def language(g: Generator) -> str:
    return FR if g.rng.random() < 0.7 else EN


def quoting(g: Generator, who: Facts) -> Padding:
    """The mail the robot answers, quoted below its own text, as long as it takes."""
    for line in deck(g.rng, who, AGENT):
        yield "after", line, True


def out_of_office(g: Generator) -> Draft:
    """A person's out-of-office answering mail the service sent: Auto-Submitted."""
    rng, lang = g.rng, language(g)
    person = g.person(lang)
    who = facts(rng, lang, person.name, person.company)
    sent = who.fill(rng.choice(SENT[lang]))
    subject = g.unique(*(form.format(s=sent) for form in AWAY_SUBJECT[lang]))
    message_id, mailbox = g.message_id(person.domain), rng.choice(SERVICE)
    extra = ["Auto-Submitted: auto-replied",
             f"In-Reply-To: <{rng.getrandbits(64):016x}.{rng.getrandbits(32):08x}@example.com>"]
    if person.domain.startswith(("outlook.", "hotmail.", "live.")):
        extra.append("X-Auto-Response-Suppress: All")
    text = Text(html=rng.random() < 0.4 and g.size >= HTML_FROM)
    back = g.clock + timedelta(days=rng.randint(3, 20))
    start, end = day_text(g.clock - timedelta(days=rng.randint(0, 6)), lang), day_text(back, lang)
    text.add(text.lead, "Bonjour," if lang == FR else "Hello,",
             *(line.format(start=start, end=end, phone=person.phone) for line in AWAY[lang]))
    text.add(text.tail, "Cordialement," if lang == FR else "Regards,", person.name)
    head = g.head(person.address, address(person.name, person.address), mailbox, subject,
                  message_id, lang, extra)
    return Draft(head, text, quoting(g, who), person.address, mailbox, message_id, subject, lang)


def bounce(g: Generator) -> Draft:
    """A delivery report (multipart/report, null sender) for mail the service sent to a
    customer address that no longer exists, the returned message attached whole."""
    rng, lang = g.rng, language(g)
    gone = g.person(lang)  # its address is never used again
    who = facts(rng, lang, gone.name, gone.company)
    sent = who.fill(rng.choice(SENT[lang]))
    subject = g.unique(*(form.format(s=sent) for form in FAILED_SUBJECT[lang]))
    host = f"smtp-in{rng.randint(1, 4)}.{gone.domain}"
    message_id, mailbox = g.message_id(host), rng.choice(SERVICE)
    daemon = f"MAILER-DAEMON@{host}"
    head = g.head(daemon, address("Mail Delivery System", daemon), mailbox, subject,
                  message_id, lang, ["Auto-Submitted: auto-replied"])
    explain = Part(["Content-Description: Notification",
                    "Content-Type: text/plain; charset=us-ascii"],
                   EXPLAIN.format(host=host, rcpt=gone.address).replace("\n", "\r\n").encode())
    status = Part(["Content-Description: Delivery report",
                   "Content-Type: message/delivery-status"],
                  (f"Reporting-MTA: dns; {host}\r\nArrival-Date: {g.clock:%a, %d %b %Y %H:%M:%S %z}"
                   f"\r\n\r\nFinal-Recipient: rfc822; {gone.address}\r\nAction: failed\r\n"
                   f"Status: 5.1.1\r\nRemote-MTA: dns; {host}\r\nDiagnostic-Code: smtp; 550 "
                   f"5.1.1 <{gone.address}>: Recipient address rejected: User unknown\r\n"
                   ).encode())
    returned = [f"From: {address('Service client Example', mailbox)}", f"To: {gone.address}",
                header("Subject", sent),
                f"Message-ID: <{rng.getrandbits(64):016x}@example.com>"]
    text = Text()
    text.add(text.lead, "Bonjour," if lang == FR else "Hello,", next(deck(rng, who, AGENT)))
    text.add(text.tail, "Service client Example")

    def shape(text: Text, extra: Part | None) -> Part:
        original = message(returned, text_part(text), "=-returned")
        return Part([], children=[explain, status, Part(
            ["Content-Description: Undelivered Message", "Content-Type: message/rfc822"],
            original)], subtype="report", params="; report-type=delivery-status")

    return Draft(head, text, quoting(g, who), "", mailbox, message_id, subject, lang, shape)


def newsletter(g: Generator) -> Draft:
    """A supplier's newsletter: List-Id, List-Unsubscribe, Precedence: bulk, HTML."""
    rng, lang = g.rng, language(g)
    brand = f"{rng.choice(BRANDS)} {rng.choice(['Plus', 'Pro', 'Direct', 'Services', 'Club'])}"
    city = rng.choice(CITIES[lang])[0]
    domain = f"{slug(brand, '-')}-{slug(city, '-')}" + (".fr" if lang == FR else ".co.uk")
    sender = g.unique(f"news@{domain}", more=lambda n: f"news{n}@{domain}")
    token = f"{rng.getrandbits(64):016x}"
    link = f"https://www.{domain}/desinscription?u={token}"
    subject = g.unique(f"{brand} : les offres de la semaine" if lang == FR
                       else f"{brand}: this week's offers")
    message_id = g.message_id(domain)
    extra = [header("List-Id", f"{brand} <news.{domain}>"),
             f"List-Unsubscribe: <{link}>, <mailto:unsubscribe-{token}@{domain}>",
             "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "Precedence: bulk"]
    text = Text(html=True)
    text.add(text.lead, *promos(g, lang, 2))
    text.add(text.tail, FOOTER[lang].format(brand=brand, link=link))
    head = g.head(f"nl-{token[:8]}@em.{domain}", address(brand, sender), SERVICE[1],
                  subject, message_id, lang, extra)

    def more() -> Padding:
        while True:
            yield "pad", " ".join(promos(g, lang, rng.randint(1, 3))), False

    return Draft(head, text, more(), f"nl-{token[:8]}@em.{domain}", SERVICE[1], message_id,
                 subject, lang)


def promos(g: Generator, lang: str, count: int) -> list[str]:
    rng = g.rng
    return [rng.choice(PROMO[lang]).format(pct=rng.choice((10, 15, 20, 30, 40)),
                                           price=rng.choice((29, 49, 79, 99, 149)),
                                           product=rng.choice(PRODUCTS[lang]))
            for _ in range(count)]
