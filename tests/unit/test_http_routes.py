"""The internal HTTP listener with plugins' routes: exact and prefix paths, 404 for what
nobody serves, 405 for a method a route does not take; served for real on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mailflow.host import Route
from mailflow.metrics import Metrics, serve_http


def page(text: str) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{text} {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()]
    return app


@pytest.fixture
def base() -> Iterator[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    server = serve_http(("127.0.0.1", 0), registry, lambda: (True, "fine"), [
        Route("/vip", page("exact")), Route("/vip/", page("under")),
        Route("/vip/form", page("form"), methods=("GET", "POST"), writes=True)])
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def get(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_routes_exact_and_under_a_prefix(base: str) -> None:
    assert get(f"{base}/vip") == (200, "exact GET /vip")
    assert get(f"{base}/vip/today") == (200, "under GET /vip/today")
    assert get(f"{base}/vip/form", data=b"x=1") == (200, "form POST /vip/form")
    status, text = get(f"{base}/metrics")
    assert status == 200 and "mailflow_messages_total" in text
    assert get(f"{base}/healthz") == (200, "ok: fine\n")


def test_what_nobody_serves_is_404_and_a_wrong_method_405(base: str) -> None:
    assert get(f"{base}/")[0] == 404
    assert get(f"{base}/nothing")[0] == 404
    status, text = get(f"{base}/vip/today", data=b"x=1")
    assert status == 405 and "POST" in text


def test_a_route_that_changes_things_says_so() -> None:
    with pytest.raises(ValueError, match="needs writes=True"):
        Route("/vip/form", page("form"), methods=("POST",))
    with pytest.raises(ValueError, match="begins with /"):
        Route("vip", page("x"))
