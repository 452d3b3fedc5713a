"""Who writes the benchmark's mail and about what: people at webmail and company
domains, the Message-IDs their mail systems give; places, products, carriers.

Apart from mailgen.py and mailtext.py so the names can grow without touching the mix
or the sentences.
Customers are never at example.com (the company) and their local parts are names,
never a robot's (noreply, postmaster…).
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

FR, EN = "fr", "en"

#: the generator's "first of these not taken yet" (``more``: numbered ones after)
Unique = Callable[..., str]

FIRST = {FR: ["Camille", "Julien", "Nathalie", "Stéphane", "Hélène", "François", "Céline",
              "Jérôme", "Sébastien", "Émilie", "Mathieu", "Sandrine", "Thierry", "Aurélie",
              "Nicolas", "Sophie", "Olivier", "Valérie", "Benoît", "Laëtitia", "Yannick",
              "Gaëlle", "Pascal", "Inès", "Karim", "Noémie", "Hugo", "Maëlle", "Antoine"],
         EN: ["James", "Sarah", "Oliver", "Emily", "Thomas", "Charlotte", "Daniel", "Hannah",
              "George", "Amelia", "Harry", "Olivia", "Jack", "Grace", "William", "Chloe"]}
LAST = {FR: ["Martin", "Bernard", "Dubois", "Lefèvre", "Girard", "Bonnet", "Mercier",
             "Fontaine", "Chevalier", "Rousseau", "Blanc", "Guérin", "Faure", "André",
             "Boyer", "Garnier", "Lemaire", "Perrin", "Clément", "Gauthier", "Morel",
             "Lambert", "Henry", "Brun", "Roux", "Vincent", "Muller", "Ferrand", "Benali"],
        EN: ["Smith", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Roberts", "Walker",
             "Wright", "Hughes", "Edwards", "Green", "Hall", "Wood", "Clarke", "Jackson"]}
WEBMAIL = {FR: ["orange.fr", "wanadoo.fr", "free.fr", "sfr.fr", "laposte.net", "gmail.com",
                "yahoo.fr", "hotmail.fr", "outlook.fr", "live.fr", "icloud.com", "bbox.fr"],
           EN: ["gmail.com", "outlook.com", "yahoo.co.uk", "btinternet.com", "hotmail.co.uk",
                "icloud.com", "sky.com", "virginmedia.com"]}
TRADES = {FR: ["Menuiserie", "Boulangerie", "Garage", "Cabinet", "Atelier", "Pharmacie",
               "Plomberie", "Transports", "Hôtel", "Librairie", "Agence", "Imprimerie"],
          EN: ["Builders", "Consulting", "Joinery", "Dental", "Motors", "Design", "Logistics"]}
PRODUCTS = {FR: ["le lave-linge Série 6", "le canapé d'angle Oslo", "la perceuse sans fil 18 V",
                 "la table de jardin en teck", "le réfrigérateur américain", "le matelas 160x200",
                 "l'aspirateur balai", "la cafetière expresso", "le bureau réglable",
                 "la tondeuse thermique", "le poêle à granulés", "les chaises de bureau",
                 "le lit mezzanine", "la friteuse à air", "le téléviseur 55 pouces"],
            EN: ["the Series 6 washing machine", "the Oslo corner sofa", "the 18 V drill",
                 "the teak garden table", "the American fridge", "the king-size mattress",
                 "the stick vacuum cleaner", "the espresso machine", "the standing desk",
                 "the petrol lawnmower", "the air fryer", "the 55-inch television"]}
CITIES = {FR: [("Lyon", "69003"), ("Nantes", "44000"), ("Lille", "59000"), ("Rennes", "35000"),
               ("Toulouse", "31000"), ("Dijon", "21000"), ("Angers", "49000"),
               ("Grenoble", "38000"), ("Tours", "37000"), ("Brest", "29200"),
               ("Pau", "64000"), ("Metz", "57000"), ("Nîmes", "30000"), ("Caen", "14000")],
          EN: [("Leeds", "LS1 4AP"), ("Bristol", "BS1 5TR"), ("York", "YO1 7HH"),
               ("Cardiff", "CF10 1EP"), ("Norwich", "NR2 1NT"), ("Bath", "BA1 1LZ")]}
STREETS = {FR: ["{n} rue des Lilas", "{n} avenue Jean Jaurès", "{n} chemin du Moulin",
                "{n} place de la République", "{n} impasse des Érables"],
           EN: ["{n} High Street", "{n} Station Road", "{n} Church Lane", "{n} Mill Road"]}
CARRIERS = ["Colissimo", "Chronopost", "DPD", "UPS", "GLS", "Mondial Relay", "DHL"]
AGENTS = ["Thunderbird/128.7.1", "Apple Mail (2.3826.400.131.1.6)",
          "Microsoft Outlook 16.0", "Roundcube Webmail/1.6.9", None, None]


def slug(text: str, joiner: str = "") -> str:
    """``Hélène Lefèvre`` -> ``helenelefevre`` (``helene-lefevre`` with ``joiner="-"``)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return joiner.join("".join(c if c.isalnum() else " " for c in folded).split())


@dataclass(frozen=True)
class Person:
    name: str
    address: str
    company: str
    phone: str
    domain: str


def person(rng: random.Random, language: str, unique: Unique) -> Person:
    """Someone new: a name, an address of their own (at a webmail or their company's
    domain), maybe a company, a phone number."""
    first, last = rng.choice(FIRST[language]), rng.choice(LAST[language])
    f, surname = slug(first), slug(last, "")
    company = ""
    if rng.random() < 0.35:
        trade = rng.choice(TRADES[language])
        company = f"{trade} {last}" if language == FR else f"{last} {trade} Ltd"
        domain = f"{slug(trade, '-')}-{slug(last, '-')}" + rng.choice(
            [".fr", ".fr", ".com", ".eu"] if language == FR else [".co.uk", ".com"])
    else:
        domain = rng.choice(WEBMAIL[language])
    local = rng.choice([f"{f}.{surname}", f"{f[0]}{surname}", f"{surname}.{f}",
                        f"{f}.{surname}{rng.randint(1, 99)}", f"{f}_{surname}",
                        f"{f}{surname}{rng.randint(60, 99)}"])
    mail = unique(f"{local}@{domain}", more=lambda n: f"{local}{n}@{domain}")
    phone = (f"0{rng.randint(6, 7)} " + " ".join(f"{rng.randint(0, 99):02d}" for _ in "1234")
             if language == FR else f"07700 {rng.randint(900000, 900999)}")
    return Person(f"{first} {last}", mail, company, phone, domain)


def message_id(rng: random.Random, domain: str, unique: Unique) -> str:
    """As the sender's mail system writes them (Outlook's run to 80 characters)."""
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    hexa = f"{rng.getrandbits(128):032x}"
    if domain == "gmail.com":
        mid = "CA" + "".join(rng.choices(alnum + "+_-", k=44)) + "@mail.gmail.com"
    elif domain.startswith(("outlook.", "hotmail.", "live.")):
        host = f"PR{rng.randint(1, 3)}P{rng.randint(190, 199)}MB{rng.randint(1000, 9999)}"
        mid = (f"{host}{''.join(rng.choices(alnum, k=24))}@{host}.EURP{rng.randint(190, 199)}"
               ".PROD.OUTLOOK.COM")
    elif domain in ("icloud.com", "me.com"):
        mid = f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}@icloud.com"
        mid = mid.upper().replace("@ICLOUD.COM", "@icloud.com")
    else:
        mid = f"{hexa[:16]}.{hexa[16:24]}@{domain}"
    return f"<{unique(mid)}>"
