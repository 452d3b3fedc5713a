"""Triage without a daemon: folding, the term matcher, prioritise scoring, route choices,
and the configuration mistakes ``load_runtime`` (so ``mailflow check``) must refuse.

The stages are built from a rules folder written in ``tmp_path`` by ``load_runtime``,
exactly as the daemon builds them, and run through the real chain; route uses a
real SQLite store (presence, round-robin turns, cases).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow import cases
from mailflow.agents import set_agent
from mailflow.chain import describe
from mailflow.config import ConfigError, load_settings
from mailflow.message import Envelope, parse_message
from mailflow.plugins import builtin_schemas
from mailflow.runtime import Runtime, load_runtime
from mailflow.stage import CaseInfo, CaseStatus, MessageContext
from mailflow.stages.prioritise import Thresholds
from mailflow.store import Transaction
from mailflow.store.sqlite import SqliteStore
from mailflow.textmatch import TermMatcher, _fold_unicode, flat, fold, parse_term

pytestmark = pytest.mark.timeout(20)  # each test, setup included

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

PRIORITISE = """\
prioritise:
  thresholds: {urgent: 10, high: 5, normal: 0}
  subject_factor: 2
  rules:
    - {name: urgency, weight: 6, terms: ["urgent", "urgen*", "au plus vite"]}
    - {name: legal, weight: 8, terms: ["litige", "mise en demeure", "avocat*"]}
    - {name: safety, weight: 4, terms: ["accident"]}
    - {name: reference, weight: 1, regex: ['\\bLRAR\\b', 'r[ée]f[ée]rence \\d{4}']}
    - {name: accented-regex, weight: 2, regex: ['réclamation n°\\s*\\d+']}
  senders:
    "director@bigclient.test": 5
    "@bigclient.test": 2
  bulk_weight: -20
"""

ROUTE = """\
route:
  default: accueil
  teams:
    accueil: {addresses: [contact@example.com]}
    sav:
      addresses: [sav@example.com]
      members:
        - {address: alice@example.com, name: alice}
        - {address: bruno@example.com, name: bruno}
        - {address: chloe@example.com, name: chloe}
      strategy: round_robin
    sales:
      addresses: [devis@example.com]
      members: [david@example.com, emma@example.com]
      strategy: least_loaded
    night:
      addresses: [nuit@example.com]
      members:
        - {address: owl@example.com, schedule: {sunday: ["02:00-02:01"]}}
      strategy: round_robin
    billing: {addresses: [facturation@example.com]}
    legal: {addresses: [juridique@example.com]}
    vip: {addresses: [vip@example.com]}
    urgent-desk: {addresses: [urgences@example.com]}
    partner: {addresses: [helpdesk@partner.test], external: true}
  rules:
    - name: legal
      when: {keyword: ["litige", "mise en demeure"]}
      team: legal
    - name: billing-form
      when: {form_field: {"Catégorie": "Facturation"}}
      team: billing
    - name: vip-sender
      when: {sender: ["boss@client.test", "@bigclient.test"]}
      team: vip
    - name: urgent
      when: {priority: [urgent]}
      team: urgent-desk
    - name: sales
      when: {recipient: [devis@example.com]}
      team: sales
    - name: quote-by-keyword
      when: {keyword: ["devis sign*"], recipient: [contact@example.com]}
      team: sales
    - name: after-sales
      when: {recipient: [sav@example.com]}
      team: sav
    - name: night
      when: {recipient: [nuit@example.com]}
      team: night
    - name: partner
      when: {recipient: [partenaire@example.com]}
      team: partner
    - name: direct
      when: {keyword: ["pour carole"]}
      person: carole@example.com
  account_managers: {"key@account.test": frank@example.com}
  account_managers_file: managers.csv
"""

MANAGERS = "# customer,manager\n@grande.test,carole@example.com\n"


def write_rules(folder: Path, *, chain: str = "[prioritise, route]",
                prioritise: str = PRIORITISE, route: str = ROUTE,
                managers: str | bytes = MANAGERS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chain.yaml").write_text(f"chain: {chain}\nlocal_domains: [example.com]\n",
                                       encoding="utf-8")
    (folder / "prioritise.yaml").write_text(prioritise, encoding="utf-8")
    (folder / "route.yaml").write_text(route, encoding="utf-8")
    data = managers.encode() if isinstance(managers, str) else managers
    (folder / "managers.csv").write_bytes(data)
    return folder


def runtime_for(tmp_path: Path, **kwargs: Any) -> Runtime:
    folder = write_rules(tmp_path / "rules", **kwargs)
    return load_runtime(load_settings(None, {"rules": str(folder),
                                             "state_dir": str(tmp_path / "state")}))


def problems_of(tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        runtime_for(tmp_path, **kwargs)
    return [str(p) for p in caught.value.problems]


def mail(subject: str = "Question", body: str = "Bonjour, une question.", *,
         sender: str = "claire@client.test", to: str = "sav@example.com",
         headers: str = "", charset: str = "utf-8") -> bytes:
    return (f"From: Claire <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <m@client.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n{headers}\r\n{body}\r\n").encode(charset)


async def run(runtime: Runtime, raw: bytes, *, mail_from: str = "claire@client.test",
              rcpt_to: tuple[str, ...] = ("sav@example.com",),
              store: SqliteStore | None = None, case: str | None = None,
              case_status: str = "new", customer: str | None = None) -> MessageContext:
    message = parse_message(raw, Envelope(mail_from=mail_from, rcpt_to=rcpt_to))
    ctx = MessageContext(message=message, queue_id="T1", recipients=list(rcpt_to), store=store,
                         scale=runtime.chain.scale, events=runtime.chain.events)
    if case is not None or customer is not None:  # as `number` would have left it
        ctx.case = CaseInfo(number=case or "", status=CaseStatus(case_status),
                            customer=customer or mail_from)
    await runtime.chain.run(ctx)
    assert all(d.outcome == "ok" for d in ctx.decisions), describe(ctx.decisions)
    return ctx


def notes(ctx: MessageContext, stage: str) -> dict[str, Any]:
    (decision,) = [d for d in ctx.decisions if d.stage == stage]
    return decision.notes


async def commit(store: SqliteStore, ctx: MessageContext) -> None:
    """What the pipeline does after the chain: the message's writes in one transaction."""
    def apply(tx: Transaction) -> None:
        for op, _ in ctx.writes:
            op(tx)

    await store.run_write(apply)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "store" / "mailflow.sqlite3"))
    await s.open(builtin_schemas())
    yield s
    await s.close()


@pytest.fixture
def scorer(tmp_path: Path) -> Runtime:
    """Only prioritise: no store needed."""
    return runtime_for(tmp_path, chain="[prioritise]")


@pytest.fixture
def triage(tmp_path: Path) -> Runtime:
    return runtime_for(tmp_path)


# ---------------------------------------------------------------------------
# fold and the term matcher
# ---------------------------------------------------------------------------


def test_fold_removes_accents_and_case() -> None:
    assert fold("LITIGE") == fold("litigé") == fold("Litigé") == fold("litige") == "litige"
    assert fold("Ça URGE, Réclamation ÉLÉMENTAIRE") == "ca urge, reclamation elementaire"
    assert fold("sœur ŒUVRE Straße æther") == "soeur oeuvre strasse aether"
    assert fold("ﬁn") == "fin"  # compatibility ligature
    # letters of other scripts are letters still (accents around them go all the same)
    assert fold("Café ПОЖАР Ελλάδα") == "cafe пожар ελλαδα"
    assert found(matcher("пожар"), "Срочно: ПОЖАР!") == {"пожар"}


def test_fold_keeps_typographic_punctuation_as_a_separator() -> None:
    # a typographic apostrophe or dash must not glue two words together
    assert fold("l’urgence") == "l'urgence"
    assert fold("urgent—litige") == "urgent-litige"
    assert fold("«litige»") == " litige "
    assert fold("ur\u00adgent") == "urgent"  # soft hyphen: invisible, inside the word
    assert fold("Catégorie\u00a0: Facturation") == "categorie : facturation"


#: Latin text with what mail puts beside it: marks beyond Latin-1 ("…", "€", narrow
#: spaces), ligatures, combining accents, fractions, other scripts
_MIXED = st.one_of(st.characters(max_codepoint=0x2FFF),
                   st.sampled_from("éèàçœŒæß’‘–—…€\u202f\u00a0«»½µ\u0301ﬁᴬПОЖАРλά"))


@settings(max_examples=500, deadline=None)
@given(st.text(_MIXED, max_size=40))
def test_fold_s_fast_paths_give_what_the_general_one_gives(text: str) -> None:
    """ASCII, Latin-1 and Latin-1 with a few other marks each take a shortcut; each
    must give what NFKD and the general rules give."""
    assert fold(text) == (text.lower() if text.isascii() else _fold_unicode(text))


def matcher(*terms: str) -> TermMatcher:
    return TermMatcher([parse_term(t, t) for t in terms])


def found(m: TermMatcher, text: str) -> set[str]:
    return {m.terms[i].text for i in m.find(fold(text))}


def test_terms_match_on_word_boundaries_only() -> None:
    m = matcher("litige", "art", "asap")
    assert found(m, "un litige") == {"litige"}
    assert found(m, "litige") == {"litige"}  # whole text
    assert found(m, "LITIGE!") == {"litige"}
    assert found(m, "(litige)") == {"litige"}
    assert found(m, "pré-litige") == {"litige"}  # hyphen separates words
    assert found(m, "litiges") == set()  # not a prefix term
    assert found(m, "prélitige") == set()
    assert found(m, "litige2") == set()  # digits are word characters
    assert found(m, "partie, départ, art.") == {"art"}
    assert found(m, "asap_now") == set()


def test_prefix_terms() -> None:
    m = matcher("urgen*", "avocat*")
    assert found(m, "Urgence absolue") == {"urgen*"}
    assert found(m, "affaires URGENTES") == {"urgen*"}
    assert found(m, "urgen") == {"urgen*"}
    assert found(m, "insurgent") == set()  # a prefix still starts a word
    assert found(m, "nos avocats") == {"avocat*"}
    assert found(m, "l’avocate") == {"avocat*"}  # typographic apostrophe


def test_phrases_accents_and_case() -> None:
    m = matcher("mise en demeure", "devis signé", "as soon as possible")
    assert found(m, "MISE EN DEMEURE") == {"mise en demeure"}
    assert found(m, "une mise en\r\ndemeure") == {"mise en demeure"}  # wrapped line
    assert found(m, "mise  en\tdemeure") == {"mise en demeure"}
    assert found(m, "Devis SIGNE") == {"devis signé"}
    assert found(m, "le devis signé.") == {"devis signé"}
    assert found(m, "devis signés") == set()
    assert found(m, "remise en demeure") == set()
    assert found(m, "As soon as possible") == {"as soon as possible"}


def test_flat_text_is_what_stages_search() -> None:
    assert flat("mise en\r\ndemeure  \t et\n\navocat") == "mise en demeure et avocat"
    # already flat, the matcher takes it as it is; not flat, it flattens it itself
    m = matcher("mise en demeure")
    assert m.find(flat("mise en\r\ndemeure")) == m.find("mise en\r\ndemeure") == {0}


def test_a_text_without_terms_and_a_matcher_without_terms() -> None:
    assert matcher("litige").find("") == set()
    assert TermMatcher([]).find("litige") == set()


def test_empty_term_is_refused() -> None:
    with pytest.raises(ValueError, match="empty term"):
        parse_term(" * ")


# ---------------------------------------------------------------------------
# prioritise
# ---------------------------------------------------------------------------


async def test_subject_counts_subject_factor_times(scorer: Runtime) -> None:
    in_text = await run(scorer, mail("Question", "Un accident est arrivé."))
    assert in_text.triage.score == 4
    in_subject = await run(scorer, mail("Accident", "Rien d'autre."))
    assert in_subject.triage.score == 8
    both = await run(scorer, mail("Accident", "Un accident, encore un accident."))
    assert both.triage.score == 8  # the rule's best place, counted once


async def test_each_rule_counts_once(scorer: Runtime) -> None:
    ctx = await run(scorer, mail("Question", "URGENT : urgence, répondez au plus vite, "
                                             "c'est urgentissime."))
    assert ctx.triage.score == 6
    assert ctx.priority == "high"
    matched = notes(ctx, "prioritise")["matched"]
    assert {k.split(":")[0] for k in matched} == {"urgency"}
    two_rules = await run(scorer, mail("Question", "Un litige et un accident."))
    assert two_rules.triage.score == 8 + 4


async def test_accents_and_case_do_not_matter(scorer: Runtime) -> None:
    for word in ("LITIGE", "litigé", "Litige", "litige"):
        ctx = await run(scorer, mail("Question", f"Il y a un {word} entre nous."))
        assert ctx.triage.score == 8, word


async def test_regex_rules(scorer: Runtime) -> None:
    ctx = await run(scorer, mail("Question", "Envoyé en lrar, référence 1234."))
    assert ctx.triage.score == 1  # two patterns of one rule: once
    matched = notes(ctx, "prioritise")["matched"]
    assert len(matched) == 2 and all(k.startswith("reference: /") for k in matched)
    # a pattern written with accents still matches the folded text
    accented = await run(scorer, mail("Réclamation N° 77", "Voir le sujet."))
    assert accented.triage.score == 4  # in the Subject: twice
    assert (await run(scorer, mail("Question", "LRARS"))).triage.score == 0


async def test_sender_weights(scorer: Runtime) -> None:
    director = await run(scorer, mail(), mail_from="director@bigclient.test")
    assert director.triage.score == 5 + 2  # the address and its domain
    colleague = await run(scorer, mail(), mail_from="Someone@BigClient.test")
    assert colleague.triage.score == 2
    stranger = await run(scorer, mail(), mail_from="someone@client.test")
    assert stranger.triage.score == 0
    # a web form: the customer found by `number` counts, not the web server
    form = await run(scorer, mail(), mail_from="web@example.com",
                     customer="director@bigclient.test")
    assert form.triage.score == 7


@pytest.mark.parametrize("headers", [
    "Precedence: bulk\r\n",
    "Precedence: list\r\n",
    "List-Id: Offres <offres.shop.test>\r\n",
    "List-Unsubscribe: <mailto:unsub@shop.test>\r\n",
    "Auto-Submitted: auto-replied\r\n",
    "X-Auto-Response-Suppress: All\r\n",
])
async def test_bulk_lists_and_auto_replies_are_demoted(scorer: Runtime, headers: str) -> None:
    ctx = await run(scorer, mail("Offres URGENTES", "Promotions urgentes !", headers=headers))
    assert ctx.triage.score == 12 - 20
    assert ctx.priority == "low"
    assert "bulk, list or automatic mail" in notes(ctx, "prioritise")["matched"]


async def test_null_sender_is_demoted(scorer: Runtime) -> None:
    ctx = await run(scorer, mail("Undelivered Mail", "Delivery failed."), mail_from="")
    assert ctx.priority == "low"


def test_thresholds() -> None:
    t = Thresholds(urgent=10, high=5, normal=0)
    assert [t.level(s) for s in (100, 10, 9.5, 5, 4.99, 0, -0.5, -20)] == [
        "urgent", "urgent", "high", "high", "normal", "normal", "low", "low"]


async def test_levels_headers_and_notes(scorer: Runtime) -> None:
    cases_ = [("Question", "Bonjour.", "normal", "0"),
              ("Question", "Un accident.", "normal", "4"),
              ("Question", "Un litige.", "high", "8"),
              ("Litige", "Voir le sujet.", "urgent", "16"),
              ("Question", "Un litige, vite, urgent.", "urgent", "14")]
    for subject, body, level, score in cases_:
        ctx = await run(scorer, mail(subject, body))
        assert ctx.header("X-Mailflow-Priority") == level, (subject, body)
        assert ctx.header("X-Mailflow-Score") == score, (subject, body)
        note = notes(ctx, "prioritise")
        assert note["level"] == level and note["score"] == float(score)


async def test_custom_thresholds(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, chain="[prioritise]", prioritise=PRIORITISE.replace(
        "{urgent: 10, high: 5, normal: 0}", "{urgent: 30, high: 8, normal: 2}"))
    assert (await run(runtime, mail("Litige", "x"))).priority == "high"
    assert (await run(runtime, mail("Question", "Un litige"))).priority == "high"
    assert (await run(runtime, mail("Question", "accident"))).priority == "normal"
    assert (await run(runtime, mail("Question", "rien"))).priority == "low"


def test_prioritise_configuration_errors(tmp_path: Path) -> None:
    unordered = problems_of(tmp_path / "a", prioritise=PRIORITISE.replace(
        "{urgent: 10, high: 5, normal: 0}", "{urgent: 5, high: 10, normal: 0}"))
    assert any("thresholds must go down" in p for p in unordered), unordered
    twice = problems_of(tmp_path / "b", prioritise=PRIORITISE.replace(
        "name: safety", "name: legal"))
    assert any("used twice: legal" in p for p in twice), twice
    bad_regex = problems_of(tmp_path / "c", prioritise=PRIORITISE.replace(
        "'\\bLRAR\\b'", "'(unclosed'"))
    assert any("invalid regular expression" in p and "prioritise.yaml:" in p
               for p in bad_regex), bad_regex
    nothing = problems_of(tmp_path / "d", prioritise=PRIORITISE.replace(
        'terms: ["accident"]', "terms: []"))
    assert any("needs terms or regex" in p for p in nothing), nothing


# ---------------------------------------------------------------------------
# route
# ---------------------------------------------------------------------------


async def route(runtime: Runtime, store: SqliteStore, raw: bytes, *,
                rcpt_to: tuple[str, ...] = ("sav@example.com",),
                mail_from: str = "claire@client.test", **case: Any
                ) -> tuple[str | None, str | None, list[str]]:
    ctx = await run(runtime, raw, mail_from=mail_from, rcpt_to=rcpt_to, store=store,
                    **case)
    note = notes(ctx, "route")
    assert ctx.header("X-Mailflow-Route") == note["route"]
    assert ctx.header("X-Mailflow-Assignee") == note["assignee"]
    return note["route"], note["assignee"], ctx.recipients


async def test_route_by_recipient_default_and_first_match(triage: Runtime,
                                                          store: SqliteStore) -> None:
    assert await route(triage, store, mail(to="contact@example.com"),
                       rcpt_to=("contact@example.com",)) == (
        "accueil", None, ["contact@example.com"])
    assert await route(triage, store, mail(to="devis@example.com"),
                       rcpt_to=("devis@example.com",)) == (
        "sales", "david@example.com", ["david@example.com"])
    # envelope for sav@, but a keyword rule comes first
    assert await route(triage, store, mail("Litige", "Un litige.")) == (
        "legal", None, ["juridique@example.com"])


async def test_only_service_mailboxes_are_replaced(triage: Runtime, store: SqliteStore) -> None:
    """A colleague and an outside address in Cc keep the message; only sav@ is routed."""
    raw = mail(headers="Cc: jean@example.com, Mme X <x@partner.test>\r\n")
    rcpt = ("sav@example.com", "Jean@example.com", "x@partner.test")
    route_name, person, recipients = await route(triage, store, raw, rcpt_to=rcpt)
    assert route_name == "sav" and person is not None
    assert recipients == [person, "Jean@example.com", "x@partner.test"]


async def test_mail_for_no_service_mailbox_is_not_routed(triage: Runtime,
                                                         store: SqliteStore) -> None:
    raw = mail(to="jean@example.com")
    ctx = await run(triage, raw, rcpt_to=("jean@example.com",), store=store)
    assert ctx.recipients == ["jean@example.com"]
    assert notes(ctx, "route")["because"] == "no service mailbox among the recipients"
    assert ctx.header("X-Mailflow-Route") is None


async def test_route_by_to_or_cc_header(triage: Runtime, store: SqliteStore) -> None:
    raw = mail(to="contact@example.com", headers="Cc: Devis <DEVIS@example.com>\r\n")
    assert (await route(triage, store, raw, rcpt_to=("contact@example.com",)))[0] == "sales"


async def test_route_by_sender_address_or_domain(triage: Runtime, store: SqliteStore) -> None:
    assert (await route(triage, store, mail(), mail_from="Boss@Client.test"))[0] == "vip"
    assert (await route(triage, store, mail(), mail_from="x@bigclient.test"))[0] == "vip"
    assert (await route(triage, store, mail(), mail_from="x@sub.bigclient.test"))[0] == "sav"


async def test_route_by_web_form_field(triage: Runtime, store: SqliteStore) -> None:
    form = "Nom : Sophie\nCATEGORIE : facturation\nDemande :\nDeux prélèvements."
    assert (await route(triage, store, mail(body=form)))[:2] == ("billing", None)
    accented = "Catégorie\u00a0: Facturation\n"
    assert (await route(triage, store, mail(body=accented)))[0] == "billing"
    other = "Catégorie : Facturation et livraison\n"
    assert (await route(triage, store, mail(body=other)))[0] == "sav"
    quoted = "Je voulais choisir la Catégorie : Facturation mais\n"  # not a field line
    assert (await route(triage, store, mail(body=quoted)))[0] == "sav"


async def test_route_by_priority(triage: Runtime, store: SqliteStore) -> None:
    urgent = mail("URGENT accident", "Au plus vite.")
    assert (await route(triage, store, urgent))[0] == "urgent-desk"
    assert (await route(triage, store, mail("Accident", "Rien.")))[0] == "sav"  # high


async def test_route_by_keyword_with_other_conditions(triage: Runtime,
                                                      store: SqliteStore) -> None:
    signed = mail("Devis", "Voici le devis signé.", to="contact@example.com")
    assert (await route(triage, store, signed, rcpt_to=("contact@example.com",)))[0] == \
        "sales"
    # the keyword alone is not enough: the rule also wants contact@
    assert (await route(triage, store, mail("Devis", "Voici le devis signé.")))[0] == "sav"


async def test_route_rule_naming_a_person(triage: Runtime, store: SqliteStore) -> None:
    raw = mail("Question", "Pour Carole, merci.", to="contact@example.com")
    assert await route(triage, store, raw, rcpt_to=("contact@example.com",)) == (
        "direct", "carole@example.com", ["carole@example.com"])


async def test_rules_sharing_a_name_do_not_share_keyword_hits(tmp_path: Path,
                                                              store: SqliteStore) -> None:
    rules = ROUTE.replace("- name: legal\n", "- name: same\n").replace(
        "- name: direct\n", "- name: same\n")
    runtime = runtime_for(tmp_path, route=rules)
    # "pour carole" hits the second 'same' rule only: the first must not match
    assert (await route(runtime, store, mail("Question", "Pour carole.", to="contact@example.com"),
                        rcpt_to=("contact@example.com",)))[:2] == ("same", "carole@example.com")
    assert (await route(runtime, store, mail("Question", "Un litige.")))[:2] == ("legal", None)


async def test_account_managers_yaml_and_csv(triage: Runtime, store: SqliteStore) -> None:
    assert await route(triage, store, mail("Litige", "Un litige."),
                       mail_from="anyone@grande.test") == (
        "account-manager", "carole@example.com", ["carole@example.com"])
    assert (await route(triage, store, mail(), mail_from="Key@Account.test"))[1] == \
        "frank@example.com"
    # the web form's customer, not the web server
    assert (await route(triage, store, mail(), mail_from="web@example.com",
                        customer="boss@grande.test"))[1] == "carole@example.com"


async def test_account_managers_csv_from_a_spreadsheet(tmp_path: Path,
                                                       store: SqliteStore) -> None:
    # "CSV UTF-8" as a spreadsheet saves it: a byte-order mark, CRLF, blank lines, quotes
    csv = ('\ufeff@grande.test,Carole@Example.com\r\n\r\n  # comment\r\n'
           '"key@b.test", dan@example.com\r\n')
    runtime = runtime_for(tmp_path, managers=csv.encode())
    assert (await route(runtime, store, mail(), mail_from="x@grande.test"))[1] == \
        "carole@example.com"
    assert (await route(runtime, store, mail(), mail_from="key@b.test"))[1] == "dan@example.com"


async def test_round_robin_and_presence(triage: Runtime, store: SqliteStore) -> None:
    async def people(n: int) -> list[str | None]:
        return [(await route(triage, store, mail()))[1] for _ in range(n)]

    assert await people(6) == ["alice@example.com", "bruno@example.com",
                               "chloe@example.com"] * 2
    await store.run_write(partial(set_agent, name="Bruno", status="away"))
    chosen = await people(6)
    assert "bruno@example.com" not in chosen
    assert chosen.count("alice@example.com") == chosen.count("chloe@example.com") == 3
    await store.run_write(partial(set_agent, name="bruno", status="present"))
    assert set(await people(3)) == {"alice@example.com", "bruno@example.com",
                                    "chloe@example.com"}
    for name in ("alice", "bruno", "chloe"):
        await store.run_write(partial(set_agent, name=name, status="away"))
    route_, person, recipients = await route(triage, store, mail())
    assert (route_, person, recipients) == ("sav", None, ["sav@example.com"])


async def test_schedule_off_duty_means_absent(triage: Runtime, store: SqliteStore) -> None:
    async def owl_at(when: dt.datetime) -> str | None:
        message = parse_message(mail(to="nuit@example.com"),
                                Envelope("claire@client.test", ("nuit@example.com",)))
        ctx = MessageContext(message=message, queue_id="T", recipients=["nuit@example.com"],
                             store=store, received_at=when.timestamp())
        await triage.chain.run(ctx)
        assignee: str | None = notes(ctx, "route")["assignee"]
        assert ctx.recipients == [assignee or "nuit@example.com"]
        return assignee

    paris = ZoneInfo("Europe/Paris")
    # the only member works two minutes on Sunday night (2026-11-22 is a Sunday)
    assert await owl_at(dt.datetime(2026, 11, 22, 2, 0, 30, tzinfo=paris)) == "owl@example.com"
    assert await owl_at(dt.datetime(2026, 11, 22, 2, 1, 0, tzinfo=paris)) is None
    assert await owl_at(dt.datetime(2026, 11, 23, 2, 0, 30, tzinfo=paris)) is None  # Monday
    # the rules' timezone counts, not the machine's: 01:00:30 UTC is 02:00:30 in Paris
    assert await owl_at(dt.datetime(2026, 11, 22, 1, 0, 30, tzinfo=dt.UTC)) == \
        "owl@example.com"


async def test_least_loaded(triage: Runtime, store: SqliteStore) -> None:
    def open_cases(tx: Transaction) -> None:
        for i in range(2):
            cases.insert_case(tx, number=f"DEV-{i}", customer="c@client.test",
                              customer_name="", subject="s", mailbox="devis@example.com")
            cases.update_case(tx, f"DEV-{i}", assignee="david@example.com")

    await store.run_write(open_cases)
    to_devis = {"rcpt_to": ("devis@example.com",)}
    assert (await route(triage, store, mail(to="devis@example.com"), **to_devis))[1] == \
        "emma@example.com"
    await store.run_write(partial(set_agent, name="emma", status="away"))
    assert (await route(triage, store, mail(to="devis@example.com"), **to_devis))[1] == \
        "david@example.com"


async def test_follow_up_goes_to_the_case_assignee(triage: Runtime,
                                                   store: SqliteStore) -> None:
    def new_case(tx: Transaction) -> None:
        cases.insert_case(tx, number="SAV-1", customer="claire@client.test",
                          customer_name="", subject="s", mailbox="sav@example.com")
        cases.update_case(tx, "SAV-1", route="sav", assignee="chloe@example.com")
        cases.insert_case(tx, number="FAC-1", customer="claire@client.test",
                          customer_name="", subject="s", mailbox="contact@example.com")
        cases.update_case(tx, "FAC-1", route="billing")

    await store.run_write(new_case)
    follow = {"case": "SAV-1", "case_status": "followup"}
    to_contact = {"rcpt_to": ("contact@example.com",)}
    ctx = await run(triage, mail(to="contact@example.com"), store=store, **follow,
                    **to_contact)
    assert notes(ctx, "route") == {"route": "sav", "assignee": "chloe@example.com",
                                   "because": "case assignee",
                                   "recipients": ["chloe@example.com"]}
    # the assignee is away: someone else of the case's team, not the default team
    await store.run_write(partial(set_agent, name="chloe", status="away"))
    await commit(store, ctx)
    route_, person, _ = await route(triage, store, mail(to="contact@example.com"),
                                    **follow, **to_contact)
    assert route_ == "sav" and person in ("alice@example.com", "bruno@example.com")
    # a case with a team and no person stays with that team
    assert (await route(triage, store, mail(to="contact@example.com"), case="FAC-1",
                        case_status="followup", **to_contact))[:2] == ("billing", None)


async def test_new_case_records_route_assignee_and_priority(tmp_path: Path,
                                                            store: SqliteStore) -> None:
    numbered = runtime_for(tmp_path, chain="[number, prioritise, route]")
    ctx = await run(numbered, mail("Accident", "Vite."), store=store)
    await commit(store, ctx)
    assert ctx.case is not None
    row = await store.run_read(partial(cases.get_case, number=ctx.case.number))
    assert row is not None
    # the priority is the case owner's to record, once the chain has ended
    assert (row.route, row.assignee, row.priority) == ("sav", "alice@example.com", "high")


async def test_mail_for_other_domains_keeps_its_recipients(triage: Runtime,
                                                           store: SqliteStore) -> None:
    # an agent's answer to a customer, relayed from a trusted network
    outgoing = await run(triage, mail(to="claire@client.test"), store=store,
                         mail_from="alice@example.com", rcpt_to=("claire@client.test",))
    assert outgoing.recipients == ["claire@client.test"]
    assert outgoing.header("X-Mailflow-Route") is None
    mixed = await run(triage, mail(), store=store, rcpt_to=("sav@example.com",
                                                            "partner@other.test"))
    assert mixed.recipients[-1] == "partner@other.test"
    assert mixed.recipients[0].endswith("@example.com") and len(mixed.recipients) == 2


async def test_dry_run_does_not_advance_the_turn(triage: Runtime, store: SqliteStore) -> None:
    message = parse_message(mail(), Envelope("claire@client.test", ("sav@example.com",)))
    for _ in range(3):
        ctx = MessageContext(message=message, queue_id="DRY", recipients=["sav@example.com"],
                             store=store, dry_run=True)
        await triage.chain.run(ctx)
        assert notes(ctx, "route")["assignee"] == "alice@example.com"
    assert (await route(triage, store, mail()))[1] == "alice@example.com"
    assert (await route(triage, store, mail()))[1] == "bruno@example.com"


# ---------------------------------------------------------------------------
# configuration errors (what `mailflow check` prints)
# ---------------------------------------------------------------------------


def line_of(text: str, needle: str) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(needle)


def test_unknown_team_is_reported_at_its_line(tmp_path: Path) -> None:
    rules = ROUTE.replace("team: billing\n", "team: facturation\n")
    problems = problems_of(tmp_path, route=rules)
    line, col = line_of(rules, "team: facturation")
    path = tmp_path / "rules" / "route.yaml"
    assert f"{path}:{line}:{col}: rule 'billing-form' names unknown team 'facturation'" in \
        "\n".join(problems), problems


def test_unknown_default_team(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, route=ROUTE.replace("default: accueil", "default: sav2"))
    assert any("default team 'sav2' is not among the teams" in p for p in problems), problems


def test_addresses_outside_the_local_domains(tmp_path: Path) -> None:
    member = ROUTE.replace("{address: chloe@example.com, name: chloe}",
                           "{address: chloe@gmail.test, name: chloe}")
    problems = problems_of(tmp_path / "a", route=member)
    line, _ = line_of(member, "chloe@gmail.test")
    assert any(f"route.yaml:{line}:" in p and "'chloe@gmail.test' is outside the local "
               "domains" in p for p in problems), problems
    person = ROUTE.replace("person: carole@example.com", "person: carole@gmail.test")
    problems = problems_of(tmp_path / "b", route=person)
    assert any("rule 'direct': 'carole@gmail.test' is outside" in p for p in problems)
    manager = ROUTE.replace("frank@example.com", "frank@gmail.test")
    assert any("account manager of 'key@account.test'" in p
               for p in problems_of(tmp_path / "c", route=manager))
    # allowed on purpose: allow_external, or external: true on the team
    allowed = person.replace("  account_managers:",
                             "  allow_external: [Carole@gmail.test]\n  account_managers:")
    assert runtime_for(tmp_path / "d", route=allowed)
    partner = ROUTE.replace("helpdesk@partner.test], external: true",
                            "helpdesk@partner.test]")
    assert any("team 'partner': 'helpdesk@partner.test' is outside" in p
               for p in problems_of(tmp_path / "e", route=partner))


def test_bad_csv_line_is_reported_at_its_line(tmp_path: Path) -> None:
    csv = "# customer,manager\n@grande.test,carole@example.com\ncarole sans virgule\n" \
          "@petite.test,dan@elsewhere.test\n"
    problems = problems_of(tmp_path, managers=csv)
    path = tmp_path / "rules" / "managers.csv"
    assert f"{path}:3:1: expected 'customer-address-or-@domain,person-address'" in problems
    assert any(p.startswith(f"{path}:4:1: account manager of '@petite.test'")
               for p in problems), problems


def test_missing_csv_file(tmp_path: Path) -> None:
    rules = ROUTE.replace("managers.csv", "absent.csv")
    problems = problems_of(tmp_path, route=rules)
    line, _ = line_of(rules, "account_managers_file")
    assert any(f"route.yaml:{line}:" in p and "absent.csv" in p for p in problems), problems


def test_shipped_rules_load(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parents[2] / "rules", folder)
    (folder / "chain.yaml").write_text(
        "chain: [number, deduplicate, prioritise, route, acknowledge]\n", encoding="utf-8")
    runtime = load_runtime(load_settings(None, {"rules": str(folder),
                                                "state_dir": str(tmp_path / "state")}))
    assert runtime.chain.names == ("number", "deduplicate", "prioritise", "route",
                                   "acknowledge")


def test_misspelt_time_zone_is_reported_at_its_line(tmp_path: Path) -> None:
    rules = ROUTE.replace("  default: accueil\n", "  default: accueil\n  timezone: Europe/Pariss\n")
    problems = problems_of(tmp_path / "route", route=rules)
    line, _ = line_of(rules, "timezone: Europe/Pariss")
    assert any(f"route.yaml:{line}:" in p and "unknown time zone 'Europe/Pariss'" in p
               for p in problems), problems
    folder = write_rules(tmp_path / "number" / "rules", chain="[number, prioritise, route]")
    (folder / "number.yaml").write_text("number:\n  prefix: SAV\n  timezone: Europe/Pariss\n",
                                        encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_runtime(load_settings(None, {"rules": str(folder),
                                          "state_dir": str(tmp_path / "state")}))
    assert f"{folder / 'number.yaml'}:3:" in str(caught.value)
    assert "unknown time zone 'Europe/Pariss'" in str(caught.value)


def test_malformed_schedule_range_is_reported_at_its_line(tmp_path: Path) -> None:
    rules = ROUTE.replace('["02:00-02:01"]', '["02:00-01:00"]')
    problems = problems_of(tmp_path, route=rules)
    line, _ = line_of(rules, "02:00-01:00")
    assert any(f"route.yaml:{line}:" in p and "'02:00-01:00' is not a range like 09:00-12:30"
               in p for p in problems), problems
