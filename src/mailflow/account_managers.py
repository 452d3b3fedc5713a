"""Account managers: the customers (an address, or ``@domain``) who go straight to their
own person, from the ``route`` rules and from a CSV file a spreadsheet can export.

Each pair remembers where it is written (the YAML key, or the CSV line) so ``mailflow
check`` points at the very line of a bad one.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from mailflow.config import Problem
from mailflow.rules import Section
from mailflow.stage import StageEnv

if TYPE_CHECKING:
    from mailflow.stages.route import RouteOptions

Where = Callable[[str], Problem]  # a message -> the problem, at the right file:line:column


def load_managers(env: StageEnv, options: RouteOptions, section: Section | None,
                   problems: list[Problem]) -> tuple[dict[str, str], dict[str, Where]]:
    """customer -> manager, and where each pair is written (YAML, or a CSV line)."""
    def at(loc: tuple[str | int, ...]) -> Where:
        if section is None:
            return lambda msg: Problem(str(env.rules.directory), 0, 0, msg)
        return lambda msg: section.problem(msg, loc)

    managers: dict[str, str] = {}
    where: dict[str, Where] = {}
    for key, value in options.account_managers.items():
        managers[key.lower()] = value.lower()
        where[key.lower()] = at(("account_managers", key))
    if options.account_managers_file:
        path = env.rules.template_path(options.account_managers_file)
        try:
            # utf-8-sig: a spreadsheet's "CSV UTF-8" export starts with a byte-order mark
            with open(path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.reader(fh)
                for row in reader:
                    line = reader.line_num
                    if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                        continue
                    if len(row) < 2 or "@" not in row[0] or "@" not in row[1]:
                        problems.append(Problem(str(path), line, 1, "expected "
                                                "'customer-address-or-@domain,person-address'"))
                        continue
                    customer = row[0].strip().lower()
                    managers[customer] = row[1].strip().lower()
                    where[customer] = partial(Problem, str(path), line, 1)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(at(("account_managers_file",))(f"cannot read {path}: {exc}"))
    return managers, where
