"""The kit as a third party meets it: a plugin package outside the tree, installed into a
throwaway environment, whose own tests import only ``mailflow.plugin`` and the fixtures
mailflow ships (``mailflow.testing.pytest_plugin``), a real daemon included.

The package is ``tests/fixtures/mailflow-vip`` (the guide's running example): a stage that
raises the priority of listed domains through a triage signal, its own table and
migration, a standing daily timer mailing a supervisor through the mail writer, a MAIL
FROM refusal, a command, a line in ``cases show``, a retention rule. It is copied to a
temporary folder, installed with pip into a new virtual environment that sees
mailflow's installed packages but nothing of this checkout's tests, and its test file
runs there with pytest; every one of its tests must pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from throwaway import install, throwaway_env

pytestmark = pytest.mark.slow

PACKAGE = REPO / "tests" / "fixtures" / "mailflow-vip"


def test_a_third_party_plugin_passes_its_own_tests(tmp_path: Path) -> None:
    package = tmp_path / "elsewhere" / "mailflow-vip"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    python = throwaway_env(tmp_path)
    install(python, package)
    found = subprocess.run([str(python), "-c", "from importlib.metadata import entry_points;"
                            " print(sorted(e.name for e in entry_points("
                            "group='mailflow.plugins')))"],
                           check=True, capture_output=True, text=True).stdout
    assert "'vip'" in found
    # the project's own interpreter does not see it: it lives in the throwaway env only
    assert "vip" not in subprocess.run(
        [sys.executable, "-c", "from importlib.metadata import entry_points;"
         " print([e.name for e in entry_points(group='mailflow.plugins')])"],
        check=True, capture_output=True, text=True).stdout
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests"], cwd=package, capture_output=True, text=True, timeout=600)
    print(run.stdout[-3000:], run.stderr[-2000:])
    assert run.returncode == 0, run.stdout[-3000:]
    assert "6 passed" in run.stdout
    imports = [line for line in (package / "tests" / "test_vip.py").read_text(
        encoding="utf-8").splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.startswith(("from mailflow.", "import mailflow."))
               or line.startswith("from mailflow.plugin import") for line in imports), imports
