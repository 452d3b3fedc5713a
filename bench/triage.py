"""Cost of prioritise + route per message: 100 KB body, 500 keyword rules.

Builds a rules folder with 500 prioritise rules (and route rules matching on
keywords too), then times both stages on the same parsed message, through
the real stage classes and a real SQLite store. Prints the mean and p95.

    .venv/bin/python bench/triage.py [--rules 500] [--body-kb 100] [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from mailflow.config import load_settings
from mailflow.message import Envelope, parse_message
from mailflow.runtime import load_runtime
from mailflow.stage import MessageContext
from mailflow.store.sqlite import SqliteStore

WORDS = [
    "commande",
    "livraison",
    "colis",
    "retard",
    "produit",
    "facture",
    "client",
    "service",
    "merci",
    "bonjour",
    "question",
    "adresse",
    "paiement",
    "remboursement",
    "garantie",
    "pièce",
    "article",
    "numéro",
    "suivi",
    "magasin",
    "réponse",
    "délai",
    "envoi",
    "retour",
    "échange",
    "carte",
    "compte",
    "reçu",
    "été",
]


def write_rules(folder: Path, n_rules: int, rng: random.Random) -> None:
    lines = ["chain: [prioritise, route]", "prioritise:", "  rules:"]
    for i in range(n_rules):
        terms = [f"terme{i}x{j}" for j in range(3)] + [f"prefixe{i}*", f"mot {i} compose"]
        lines.append(f"    - {{name: r{i}, weight: {rng.randint(1, 5)}, terms: {terms}}}")
    lines.append("    - {name: legal, weight: 8, terms: [litige, mise en demeure]}")
    lines += [
        "route:",
        "  default: main",
        "  teams:",
        "    main: {addresses: [main@example.com]}",
        "    legal: {addresses: [legal@example.com]}",
        "  rules:",
    ]
    for i in range(20):
        lines.append(f"    - {{name: k{i}, when: {{keyword: [motcle{i}, autre{i}*]}}, team: main}}")
    lines.append("    - {name: legal, when: {keyword: [litige]}, team: legal}")
    (folder / "rules.yaml").write_text("\n".join(lines) + "\nlocal_domains: [example.com]\n")


def make_message(kb: int, rng: random.Random) -> bytes:
    words: list[str] = []
    size = 0
    while size < kb * 1024:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    words[len(words) // 2] = "litige"
    body = "\r\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    return (
        f"From: client@example.net\r\nTo: sav@example.com\r\nSubject: Question urgente\r\n"
        f"Message-ID: <bench@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=500)
    parser.add_argument("--body-kb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "rules"
        folder.mkdir()
        write_rules(folder, args.rules, rng)
        settings = load_settings(None, {"rules": str(folder), "state_dir": tmp})
        started = time.perf_counter()
        runtime = load_runtime(settings)
        load_ms = (time.perf_counter() - started) * 1000
        raw = make_message(args.body_kb, rng)
        message = parse_message(raw, Envelope("client@example.net", ("sav@example.com",)))
        store = SqliteStore(str(Path(tmp) / "bench.sqlite3"))
        await store.open(runtime.schemas)
        timings = []
        ctx = None
        for _ in range(args.runs):
            ctx = MessageContext(
                message=message, queue_id="BENCH", recipients=["sav@example.com"], store=store
            )
            started = time.perf_counter()
            for stage in runtime.chain.stages:
                await stage.process(ctx)
            timings.append((time.perf_counter() - started) * 1000)
        await store.close()
    assert ctx is not None
    timings.sort()
    terms = sum(len(r.terms) for r in runtime.chain.stages[0].options.rules)  # type: ignore[attr-defined]
    print(
        f"rules: {args.rules + 1} prioritise rules ({terms} terms) + 21 route rules; "
        f"body {len(message.text) / 1024:.0f} KB of text; {args.runs} runs"
    )
    print(f"load (compile all terms once): {load_ms:.1f} ms")
    print(
        f"prioritise+route per message: mean {statistics.fmean(timings):.3f} ms, "
        f"p50 {timings[len(timings) // 2]:.3f} ms, p95 {timings[int(len(timings) * 0.95)]:.3f} ms"
    )
    print(
        f"result: priority={ctx.priority} score={ctx.triage.score if ctx.triage else 0:g} "
        f"route={ctx.header('X-Mailflow-Route')}"
    )


if __name__ == "__main__":
    asyncio.run(main())
