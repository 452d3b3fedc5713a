"""The scoring time per mail, measured and printed (``bench_scoring.py``): a figure to
read, not a timed assertion (a busy machine must not fail the suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).parents[1] / "bench_scoring.py"


def test_the_benchmark_prints_the_time_per_mail(capsys: pytest.CaptureFixture[str]) -> None:
    run = subprocess.run([sys.executable, str(BENCH), "--rounds", "3"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with capsys.disabled():
        print("\n" + run.stdout)
    lines = run.stdout.splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["fr", "en", "all"]
    assert all("240 mails" in line for line in lines if line.startswith("all"))
