"""Haraka, the peer a mail administrator would pick: installed from npm, configured in a
temporary folder, listening on loopback and forwarding every message to the sink.

The version is pinned (``VERSION``) and installed once, without a global install, under
``bench/.haraka`` (``npm install --prefix``; git ignores it). The configuration is the
smallest that relays as mailflow does: ``rcpt_to.in_host_list`` (the service domain) and
``queue/smtp_forward`` to the sink (``250`` only once the next hop accepted), one node
per core (``nodes=cpus``), logs at Haraka's default level (``info``) to a file. One
local plugin answers the reverse-DNS lookup Haraka does for every connection with
``localhost``: the benchmark stays on loopback and asks no DNS server (mailflow does
no lookup either).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from procs import HOST, REPO, SetupError

VERSION = "3.3.4"
PREFIX = REPO / "bench" / ".haraka"
DOMAINS = ("example.com",)  # the service mailboxes' domain (bench/mailgen.py's recipients)

RDNS_PLUGIN = """\
// The benchmark runs on loopback: no reverse-DNS query for the client's address.
exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}
"""


def installed_version(prefix: Path = PREFIX) -> str | None:
    try:
        meta = json.loads((prefix / "node_modules" / "Haraka" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return str(version) if version else None


def install(prefix: Path = PREFIX, version: str = VERSION, timeout: float = 600) -> Path:
    """Haraka ``version`` under ``prefix`` (installed there by npm if it is not yet):
    the path of its ``haraka`` command."""
    binary = prefix / "node_modules" / ".bin" / "haraka"
    if installed_version(prefix) == version and binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SetupError("Haraka needs node and npm: apt-get install nodejs npm")
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing Haraka {version} from npm under {prefix} …", flush=True)
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--loglevel=error", f"Haraka@{version}"],
            capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SetupError(f"npm install Haraka@{version} took over {timeout:.0f}s") from None
    if done.returncode != 0 or not binary.exists():
        raise SetupError(f"npm install Haraka@{version} failed:\n{done.stderr[-2000:]}")
    return binary


def binary_folder(binary: Path) -> Path:
    """The Haraka package's folder, from its ``haraka`` command."""
    return binary.resolve().parent.parent


def configure(binary: Path, folder: Path, port: int, next_hop: int, nodes: str = "cpus",
              log_level: str = "info") -> Path:
    """Haraka's configuration in ``folder``: its shipped defaults, then listen on
    HOST:``port``, forward to HOST:``next_hop``; returns ``folder`` (for ``haraka -c``)."""
    config = folder / "config"
    shipped = binary_folder(binary) / "config"  # Haraka's defaults, as `haraka -i` starts
    shutil.copytree(shipped, config, dirs_exist_ok=True)
    (folder / "plugins").mkdir(exist_ok=True)
    (folder / "plugins" / "bench_rdns.js").write_text(RDNS_PLUGIN)
    files = {
        "smtp.ini": f"listen={HOST}:{port}\nnodes={nodes}\n",
        "plugins": "bench_rdns\nrcpt_to.in_host_list\nqueue/smtp_forward\n",
        "host_list": "".join(f"{domain}\n" for domain in DOMAINS),
        "smtp_forward.ini": (f"host={HOST}\nport={next_hop}\nenable_tls=false\n"
                             "enable_outbound=false\nmax_connections=1000\n"),
        "log.ini": f"[main]\nlevel={log_level}\ntimestamps=false\nformat=default\n",
        "me": "haraka.bench.example\n",
    }
    for name, text in files.items():
        (config / name).write_text(text)
    return folder


def command(binary: Path, folder: Path) -> list[str]:
    return [str(binary), "-c", str(folder)]
