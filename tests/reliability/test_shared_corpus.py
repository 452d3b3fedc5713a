"""../shared/corpus through the real daemon, full chain, each file in both forms.

As test_corpora.py does for CPython's email data: every message gets ``250``.
Collected only where ../shared exists (see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_corpora import full_chain_daemon, send_variants

from conftest import CORPUS, Daemon, Sink

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out


@pytest.fixture(scope="module")
def corpus_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Sink]]:
    with full_chain_daemon(tmp_path_factory.mktemp("shared-corpus")) as running:
        yield running


def test_shared_corpus(corpus_daemon: tuple[Daemon, Sink]) -> None:
    files = sorted(CORPUS.glob("*.eml"))
    assert files, f"no corpus at {CORPUS}"
    daemon, sink = corpus_daemon
    results = []
    for i, path in enumerate(files):
        results += send_variants(daemon, sink, path.read_bytes(), f"shared{i}@client.test",
                                 path.name)
    assert all(code == 250 for _, code, _ in results), results
    print(f"\n[shared corpus] {len(files)} files x 2 forms, all 250")
