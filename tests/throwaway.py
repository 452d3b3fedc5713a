"""A throwaway virtual environment that sees the packages mailflow is installed with (not
the project's tests, not its plugins' sources), for installing a plugin package the way
a third party would (``tests/integration/test_plugin_kit.py``, ``test_sentiment_install``)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def throwaway_env(tmp_path: Path) -> Path:
    """A new venv seeing mailflow's installed packages and their dependencies: its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig;"
                              " print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    installed = sysconfig.get_paths()["purelib"]  # mailflow's, and its dependencies'
    (Path(purelib) / "mailflow-installed.pth").write_text(
        f"import site; site.addsitedir({installed!r})\n", encoding="utf-8")
    return python


def install(python: Path, package: Path) -> None:
    """``package`` installed from its folder, offline, with what the environment has."""
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", str(package)],
                   check=True, timeout=300)
