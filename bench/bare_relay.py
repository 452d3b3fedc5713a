#!/usr/bin/env python3
"""The ``bare`` run's server: aiosmtpd relaying over a pool of persistent aiosmtplib clients.

It is the floor cost of the stack mailflow is built on.  A script of its own, started
by the benchmark as ``bare_relay.py LISTEN_PORT SINK_PORT POOL_SIZE``, so that it can
run under another python (one with aiosmtpd and aiosmtplib) than the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procs import HOST, REPO, SetupError


class _PooledRelay:
    """aiosmtpd handler: relay each message through a pool of persistent aiosmtplib clients."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.pool: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self) -> None:
        import aiosmtplib

        for _ in range(self.size):
            client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, local_hostname="bare-relay", timeout=30
            )
            await client.connect()
            self.pool.put_nowait(client)

    async def close(self) -> None:
        while not self.pool.empty():
            client = self.pool.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import aiosmtplib

        client = await self.pool.get()
        try:
            if not client.is_connected:
                await client.connect()
            sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from  # a DSN's
            await client.sendmail(sender, envelope.rcpt_tos, envelope.original_content or b"")
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()  # drop it; reconnected on its next use
            return f"451 4.4.0 next hop failed: {exc}"
        finally:
            self.pool.put_nowait(client)
        return "250 2.0.0 Ok: relayed"


async def serve_bare_relay(listen_port: int, sink_port: int, pool_size: int) -> None:
    from aiosmtpd.smtp import SMTP

    relay = _PooledRelay(HOST, sink_port, pool_size)
    await relay.start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="bare-relay"), HOST, listen_port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await relay.close()


def bare_relay_python() -> str:
    if importlib.util.find_spec("aiosmtpd") and importlib.util.find_spec("aiosmtplib"):
        return sys.executable
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists():
        return str(venv_python)
    raise SetupError("aiosmtpd/aiosmtplib not importable: run with the project's venv python")


def bare_relay_command(listen_port: int, sink_port: int, pool_size: int) -> list[str]:
    """How the benchmark starts this script: the python of ``bare_relay_python``."""
    return [
        bare_relay_python(), str(Path(__file__).resolve()),
        str(listen_port), str(sink_port), str(pool_size),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare relay of the throughput benchmark")
    parser.add_argument("listen_port", type=int)
    parser.add_argument("sink_port", type=int)
    parser.add_argument("pool_size", type=int)
    args = parser.parse_args(argv)
    asyncio.run(serve_bare_relay(args.listen_port, args.sink_port, args.pool_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
