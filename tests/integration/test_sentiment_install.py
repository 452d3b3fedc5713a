"""The mood plugin as a third party's package: ``plugins/mailflow-sentiment`` copied out
of the tree, installed with pip into a throwaway environment (which sees mailflow's
installed packages, its lexicon libraries included, but nothing of this checkout's
sources), and its own tests run there with pytest: the evaluation set and the real
daemon included. Every one must pass, and the code they ran must be the copy."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from throwaway import install, throwaway_env

pytestmark = pytest.mark.slow

PACKAGE = REPO / "plugins" / "mailflow-sentiment"


def test_the_sentiment_plugin_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    package = tmp_path / "elsewhere" / "mailflow-sentiment"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns(
        "*.egg-info", "build", "__pycache__", ".pytest_cache"))
    python = throwaway_env(tmp_path)
    install(python, package)
    where = subprocess.run([str(python), "-c", "import mailflow_sentiment.plugin as p;"
                            " print(p.__file__)"], check=True, capture_output=True,
                           text=True).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not ours
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "tests"], cwd=package, capture_output=True,
                         text=True, timeout=900)
    print(run.stdout[-4000:], run.stderr[-2000:])
    assert run.returncode == 0, run.stdout[-4000:]
    assert " failed" not in run.stdout and " skipped" not in run.stdout
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed is not None and int(passed.group(1)) >= 60, run.stdout[-1000:]
    assert "negative precision" in run.stdout  # the evaluation ran and said its figures
