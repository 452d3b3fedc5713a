"""Debian's chromium, headless, driven over its DevTools protocol (CDP) on loopback.

``Chromium`` starts the browser with a private profile and a debugging port
it picks itself (read back from ``DevToolsActivePort``: no race for a free
port), opens one tab and talks to it over a websocket. Every wait is
bounded; ``close`` kills the browser's whole process group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: flags for a quiet browser: nothing of its own on the network, no first-run screens
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps",
         "--disable-extensions", "--mute-audio", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0")


def executable() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("no chromium: `make debs` installs Debian's chromium package")
    return found


class CdpError(RuntimeError):
    """The browser answered a command with an error."""


class Chromium:
    """One headless browser with one tab; a context manager."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="mailflow-chromium-"))
        self.log_path = self.profile / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._closing = contextlib.ExitStack()
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [executable(), *FLAGS, f"--user-data-dir={self.profile / 'data'}",
                 "about:blank"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own group: close() kills every child
        port = self._debugging_port()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                         method="PUT")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            target = json.loads(response.read())
        self.ws = self._closing.enter_context(connect(
            target["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout))

    def _debugging_port(self) -> int:
        marker = self.profile / "data" / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}:\n"
                                   f"{self.log[-3000:]}")
            lines = marker.read_text().splitlines() if marker.is_file() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError(f"chromium opened no debugging port in {self.timeout}s:\n"
                           f"{self.log[-3000:]}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def close(self) -> None:
        self._closing.close()  # the websocket
        self.ws = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- the protocol ------------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command; events arriving meanwhile are kept in ``events``."""
        assert self.ws is not None, "not started"
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first event ``method`` (kept ones first), waiting at most ``timeout``."""
        assert self.ws is not None, "not started"
        for event in self.events:
            if event["method"] == method:
                self.events.remove(event)
                return event
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout or self.timeout}s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("method") == method:
                return message
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigate {url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 20.0) -> Any:
        """Evaluate ``expression`` until it is truthy (polled; bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression!r} still false after {timeout}s")

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
