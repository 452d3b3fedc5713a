"""The shipped Grafana dashboard's queries, as a real Prometheus is asked them.

Every panel target's PromQL of deploy/grafana/mailflow-dashboard.json (nested rows
included), Grafana's variables substituted as "All" and windows long enough to hold a
whole test, and its query variables (``label_values(metric, label)``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "mailflow-dashboard.json"
#: what Grafana would put in place of its variables: every instance, route and
#: priority; windows long enough to hold the whole test
VARIABLES = {"$instance": ".*", "$route": ".*", "$priority": ".*", "$window": "1h",
             "$__rate_interval": "1h", "$__range": "1h", "$__interval": "15s"}
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable left unsubstituted: {expr}"
    return expr


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def dashboard_queries() -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(where, expr) of every panel target; (variable, metric, label) of label_values."""
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [(f"panel {p['title']!r} {t['refId']}", t["expr"])
             for p in panels(data["panels"]) for t in p.get("targets") or []]
    variables = []
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            found = LABEL_VALUES.fullmatch(variable["query"]["query"])
            assert found is not None, variable
            variables.append((variable["name"], found.group(1), found.group(2)))
    return exprs, variables


def has_numbers(answer: dict[str, Any]) -> bool:
    """The answer holds at least one number that is not NaN (a histogram_quantile over
    nothing is NaN: an empty panel)."""
    if answer.get("status") != "success":
        return False
    data = answer["data"]
    if data["resultType"] == "scalar":
        return not math.isnan(float(data["result"][1]))
    return any(not math.isnan(float(item["value"][1])) for item in data["result"])
