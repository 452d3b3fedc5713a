"""Every sample message of the corpus through one daemon with the shipped rules.

Each is sent with its envelope (``mail_from: ''`` is the null sender) and must
be accepted and arrive at the next hop with its original bytes as a suffix:
mailflow only prepends headers. Most corpus files use LF line endings. smtplib
converts them to CRLF only for ``str`` messages: ``bytes`` go out as they are
(plus a CRLF if the last line has none). So the test sends what an MTA sends,
the CRLF form, and expects exactly those bytes after mailflow's headers.
Mail that the chain writes itself (acknowledgements…) may arrive as well.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import CORPUS, Daemon, Sink

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out


def _index() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
    return list(data["messages"])


MESSAGES = _index()


def as_sent(raw: bytes) -> bytes:
    """The message as an MTA puts it on the wire (before dot-stuffing): CRLF lines only."""
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def null_as_empty(sender: str) -> str:
    """aiosmtpd (the sink) records the null sender as "<>"; the index writes ''."""
    return "" if sender == "<>" else sender


@pytest.fixture(scope="module")
def corpus_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Sink]]:
    """One sink and one daemon for the whole corpus, in index order (copies follow firsts)."""
    sink = Sink()
    sink.start()
    tmp = tmp_path_factory.mktemp("corpus")
    d = Daemon(tmp / "d", f"smtp://127.0.0.1:{sink.port}")
    try:
        d.start()
        yield d, sink
    finally:
        d.stop()
        sink.stop()


@pytest.mark.parametrize("entry", MESSAGES, ids=[m["file"] for m in MESSAGES])
def test_corpus_message_is_relayed_intact(corpus_daemon: tuple[Daemon, Sink],
                                          entry: dict[str, Any]) -> None:
    d, sink = corpus_daemon
    expected = as_sent((CORPUS / entry["file"]).read_bytes())
    rcpt_to = list(entry["rcpt_to"])
    before, log_start = len(sink.messages), len(d.log)
    code, text = d.send(expected, mail_from=entry["mail_from"], rcpt_to=rcpt_to)
    assert code == 250, (entry["file"], code, text)
    relayed: list[bytes] = []
    for _ in range(100):  # up to 5 s for the relayed copy, among what the chain may send
        relayed = [m.data for m in sink.messages[before:]
                   if m.rcpt_tos == rcpt_to and m.data.endswith(expected)
                   and null_as_empty(m.mail_from) == entry["mail_from"]]
        if relayed:
            break
        time.sleep(0.05)
    assert len(relayed) == 1, (entry["file"], [(m.mail_from, m.rcpt_tos, m.data[:300])
                                               for m in sink.messages[before:]])
    added = relayed[0][: -len(expected)]
    assert added.startswith(b"Received: ") and b"\r\n\r\n" not in added
    log = d.log[log_start:]
    assert "Traceback" not in log, log[-3000:]
    assert '"level": "error"' not in log, log[-3000:]
