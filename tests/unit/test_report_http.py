"""``/report`` on the metrics listener: who may read it, and what it serves.

The listener is really served (``serve_http`` on 127.0.0.1, port 0); a
listener "beyond loopback" is the settings saying so while the socket stays
on loopback, so nothing is ever exposed by a test.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from mailflow.config import Settings, StatisticsSettings, load_settings
from mailflow.metrics import Metrics, serve_http
from mailflow.report.http import is_loopback, report_app
from mailflow.report.page import plotly_js
from statsrows import SECRET_CUSTOMER, SECRET_SUBJECT, Rows

TOKEN = "s3cret-token-for-the-report"
#: the listener's "now": 1 December 2026, 12:00 UTC
NOW = 1796126400.0


def settings_for(db: Path, metrics: str, token: str | None = None,
                 per_agent: bool = True) -> Settings:
    settings = load_settings(None, {"store": f"sqlite:///{db}", "metrics": metrics})
    return settings.model_copy(update={"statistics": StatisticsSettings(
        report_token=token, per_agent=per_agent)})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "mailflow.sqlite3"
    Rows().count("2026-12-01", "mail", 2, route="sav", label="inbound").response(
        NOW - 3600, "2026-12-01", "response", 60, agent="Alice").case(
        "SAV-1", route="sav", priority="normal").write(path)
    return path


@pytest.fixture
def serve() -> Iterator[Any]:
    servers = []

    def start(settings: Settings) -> str:
        registry = CollectorRegistry()
        Metrics(registry)
        server = serve_http(("127.0.0.1", 0), registry, lambda: (True, "fine"),
                            report_app(settings, lambda: ZoneInfo("Europe/Paris"),
                                       lambda: NOW))
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_loopback_without_a_token_serves_the_page_and_its_library(db: Path, serve: Any) -> None:
    base = serve(settings_for(db, "127.0.0.1:9125"))
    status, headers, page = get(f"{base}/report")
    assert status == 200, page
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "connect-src 'none'" in headers["Content-Security-Policy"]
    assert 'data-figure="mail.inbound" data-value="2"' in page
    assert 'id="chart-volumes"' in page and 'id="table-agents"' in page and "Alice" in page
    assert SECRET_CUSTOMER not in page and SECRET_SUBJECT not in page
    status, headers, script = get(f"{base}/report/plotly.min.js")
    assert status == 200 and script == plotly_js()
    assert headers["Content-Type"].startswith("text/javascript")
    status, _, metrics = get(f"{base}/metrics")  # the listener's own pages still answer
    assert status == 200 and "mailflow_healthy" in metrics
    assert get(f"{base}/healthz")[:3:2] == (200, "ok: fine\n")


def test_beyond_loopback_without_a_token_is_refused_saying_to_set_one(db: Path,
                                                                       serve: Any) -> None:
    base = serve(settings_for(db, "0.0.0.0:9125"))
    status, _, text = get(f"{base}/report")
    assert status == 403 and "statistics.report_token" in text
    assert "data-figure" not in text


@pytest.mark.parametrize("metrics", ["10.1.2.3:9125", "[::]:9125", "127.0.0.1:9125"])
def test_a_configured_token_is_required(db: Path, serve: Any, metrics: str) -> None:
    base = serve(settings_for(db, metrics, token=TOKEN))
    assert get(f"{base}/report")[0] == 403
    assert get(f"{base}/report?token=wrong")[0] == 403
    assert get(f"{base}/report", {"Authorization": "Bearer nope"})[0] == 403
    assert get(f"{base}/report?token={TOKEN}")[0] == 200
    status, _, page = get(f"{base}/report?since=24h", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and 'data-days="2"' in page


def test_per_agent_off_has_no_agent_table(db: Path, serve: Any) -> None:
    base = serve(settings_for(db, "127.0.0.1:9125", per_agent=False))
    status, _, page = get(f"{base}/report")
    assert status == 200 and 'id="table-agents"' not in page and "Alice" not in page


def test_bad_period_and_missing_store(tmp_path: Path, db: Path, serve: Any) -> None:
    base = serve(settings_for(db, "127.0.0.1:9125"))
    status, _, text = get(f"{base}/report?since=2bh")
    assert status == 400 and "plain time" in text
    base = serve(settings_for(tmp_path / "none.sqlite3", "127.0.0.1:9125"))
    status, _, text = get(f"{base}/report")
    assert status == 503 and "cannot be read now" in text
    assert not (tmp_path / "none.sqlite3").exists()


def test_loopback_is_an_address_not_a_name() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("localhost")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "metrics.example"))
