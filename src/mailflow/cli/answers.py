"""``mailflow answers search TEXT`` and ``mailflow answers show ID``: the library, for the team.

``search`` ranks the library as a customer's message would be ranked (the same
index, the same words), in the language given or guessed, drafts included on
request; ``show`` prints an answer's every language: its front matter and its
body as written. Both read the rules folder only: no store, no daemon.
"""

from __future__ import annotations

import argparse
import json
import sys

from mailflow.answers.library import Answer
from mailflow.answers.rank import Index
from mailflow.answers.suggest import Suggester
from mailflow.cli.options import CliError, settings_from
from mailflow.config import validate
from mailflow.language import guess_language
from mailflow.rules import load_rules


def _suggester(args: argparse.Namespace) -> Suggester:
    # imported here: the options import the metrics, which `serve` must set up first
    from mailflow.answers.options import AnswersOptions

    rules = load_rules(settings_from(args).rules)
    section = rules.section("answers")
    options = (validate(AnswersOptions, section.data, section.file, section.tree,
                        prefix=("answers",)) if section is not None else AnswersOptions())
    return Suggester.load(rules.template_path(options.folder))


def _search(suggester: Suggester, args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    language = args.language or guess_language(text).code or args.default_language
    if language not in suggester.library.languages:
        raise CliError(f"no answers in '{language}' (the library has:"
                       f" {', '.join(suggester.library.languages) or 'none'}); give --language")
    if args.drafts:
        index = Index([a for a in suggester.library if a.language == language], language)
        ranking = index.explain(index.rank("", text, args.limit), "", text)
    else:
        ranking = suggester.rank(language, "", text, args.limit)
    if args.json:
        print(json.dumps({"language": language, "confidence": ranking.confidence,
                          "answers": [{"id": m.answer.id, "code": m.answer.code,
                                       "title": m.answer.title, "score": round(m.score, 3),
                                       "status": m.answer.meta.status,
                                       "matched": list(m.matched)} for m in ranking.matches]},
                         ensure_ascii=False, indent=2))
        return 0
    if not ranking.matches:
        print(f"no answer in '{language}' shares a word with that")
        return 1
    print(f"language {language}, confidence {ranking.confidence:.2f}")
    for rank, match in enumerate(ranking.matches, start=1):
        draft = " (draft)" if not match.answer.validated else ""
        print(f"{rank}. {match.answer.code:<7} {match.answer.id:<28} {match.score:6.2f}"
              f"  {match.answer.title}{draft}")
        print(f"   words: {', '.join(match.matched) or '-'}")
    return 0


def _described(answer: Answer) -> str:
    meta = answer.meta
    lines = [f"== {meta.id} [{meta.language}] {meta.code}: {meta.title}",
             f"file      {answer.file}",
             f"theme     {meta.theme}{' / ' + meta.subtheme if meta.subtheme else ''}",
             f"status    {meta.status}, owner {meta.owner}, review by"
             f" {meta.review_by.isoformat()}",
             f"keywords  {', '.join(meta.keywords) or '-'}",
             f"fields    {', '.join(meta.fields) or '-'}", "", answer.body.rstrip(), ""]
    return "\n".join(lines)


def _show(suggester: Suggester, args: argparse.Namespace) -> int:
    wanted = args.text[0] if args.text else ""
    found = suggester.library.versions(wanted) or suggester.library.by_code(wanted)
    if args.language:
        found = [a for a in found if a.language == args.language]
    if not found:
        print(f"no answer '{wanted}' (an id like delivery-delay, or a code like LIV-01)",
              file=sys.stderr)
        return 1
    for answer in found:
        print(_described(answer))
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.text:
        raise CliError(f"{args.action} needs {'TEXT' if args.action == 'search' else 'an ID'}",
                       2)
    suggester = _suggester(args)
    return _search(suggester, args) if args.action == "search" else _show(suggester, args)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               ) -> argparse.ArgumentParser:
    answers = sub.add_parser("answers", help="search the answer library, or show an answer")
    answers.add_argument("action", choices=["search", "show"])
    answers.add_argument("text", nargs="*", metavar="TEXT|ID",
                         help="words to search for (search), an answer's id or code (show)")
    answers.add_argument("--language", metavar="LANG",
                         help="the answers' language (default: guessed from TEXT)")
    answers.add_argument("--default-language", default="fr", metavar="LANG",
                         help="when TEXT's language cannot be told (default: fr)")
    answers.add_argument("--limit", type=int, default=5, help="answers listed (search)")
    answers.add_argument("--drafts", action="store_true", help="rank drafts too (search)")
    answers.add_argument("--json", action="store_true", help="machine-readable output")
    return answers
