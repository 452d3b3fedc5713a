"""Peak memory of a server under load: the PSS of all its processes, sampled during a run.

PSS (proportional set size, ``/proc/PID/smaps_rollup``) charges each process its
share of the pages it shares: summed over a forked daemon's workers, a Haraka
cluster's nodes or PostgreSQL's backends, the pages they share count once. RSS
would count them once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from procs import tree_pids

INTERVAL = 0.2  # seconds between two samples
REFRESH = 10  # samples between two looks for the trees' processes (all of /proc)


def pss_kib(pid: int) -> int | None:
    """The process's PSS in KiB, None if it is gone (or not readable)."""
    try:
        with Path(f"/proc/{pid}/smaps_rollup").open("rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakPss:
    """Samples the PSS of the process trees under ``roots()`` every ``interval`` seconds
    in a thread while the ``with`` block runs; ``peak`` is the largest sum seen (MiB),
    one sample taken at the start and one at the end at least. The processes are looked
    for every ``REFRESH`` samples only: reading all of /proc costs the load client time."""

    def __init__(self, roots: Callable[[], Iterable[int]], interval: float = INTERVAL) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    @property
    def peak(self) -> float:
        return self.peak_kib / 1024

    def sample(self, refresh: bool = False) -> None:
        if refresh or self.samples % REFRESH == 0:
            self.pids = tree_pids(self.roots())
        self.peak_kib = max(self.peak_kib, sum(pss_kib(pid) or 0 for pid in self.pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakPss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(refresh=True)
