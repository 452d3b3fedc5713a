"""Handing mail to the next hop: SMTP over pooled aiosmtplib connections, or a Maildir.

The caller learns exactly what the next hop said, so the SMTP client in front
of us gets 250 only when the next hop took the message, a 4xx when it was down,
slow or said 4xx, and the 5xx it answered. aiosmtpd's ``Proxy`` handler is not
used: it says 250 even when the next hop refused, and blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiosmtplib
import structlog
from aiosmtplib.email import parse_address as wire_address

from mailflow.config import NextHop, RelaySettings

log = structlog.get_logger("mailflow.relay")

_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")


@dataclass(frozen=True)
class DeliveryResult:
    """What the next hop answered for one transaction."""

    code: int
    text: str
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: the next hop vanished after the message data, before its answer: it may have it
    unknown: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def accepted_all(self) -> bool:
        return self.ok and not self.refused


class NextHopClient(Protocol):
    #: why the last attempt could not reach the next hop (None: it answered), for /healthz
    error: str | None

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult: ...

    async def close(self) -> None: ...


class CapturingClient:
    """A next hop that takes everything and keeps a count: where a replay, a dry run or
    shadow mode "send" what must go nowhere."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.taken = 0

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult:
        self.taken += 1
        return DeliveryResult(250, "2.0.0 kept, not sent")

    async def close(self) -> None:
        return None


@functools.lru_cache(maxsize=1024)  # each address is checked coming in and going out
def check_address(address: str) -> None:
    """Refuse addresses that could smuggle commands onto the next hop's command line,
    and any that aiosmtplib would refuse (ValueError) or rewrite on its way out
    (``a;b@x`` goes out as ``<a>``): the next hop gets exactly the address accepted.
    An address refused is not remembered: it is checked again, and refused again."""
    if _BAD_ADDRESS.search(address) and not address.startswith('"'):
        raise ValueError(f"address {address!r} holds characters not allowed on an SMTP line")
    if any(c in address for c in "\r\n\0"):
        raise ValueError(f"address {address!r} holds a line break")
    if not address.isascii():
        try:  # bytes that were not UTF-8 (aiosmtpd keeps them as lone surrogates)
            address.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"address {address!r} is not valid UTF-8") from None
    try:
        sent = wire_address(address)
    except ValueError:
        sent = None
    if sent != address:
        raise ValueError(f"address {address!r} holds characters not allowed on an SMTP line")


class SmtpRelay:
    """A pool of SMTP connections to one next hop."""

    def __init__(self, hop: NextHop, settings: RelaySettings, local_hostname: str) -> None:
        self.hop = hop
        self.settings = settings
        self.local_hostname = local_hostname
        self._idle: list[tuple[aiosmtplib.SMTP, int]] = []  # connection, messages sent on it
        self._slots = asyncio.Semaphore(settings.pool_size)
        self.error: str | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        start_tls: bool | None = {"auto": None, "never": False, "require": True}[
            self.settings.starttls]
        client = aiosmtplib.SMTP(hostname=self.hop.host, port=self.hop.port,
                                 timeout=self.settings.timeout, start_tls=start_tls,
                                 # opportunistic TLS cannot insist on a certificate;
                                 # 'require' means a verified one
                                 validate_certs=self.settings.starttls == "require",
                                 local_hostname=self.local_hostname)
        await client.connect()
        await client.ehlo()
        return client

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult:
        try:
            if mail_from:
                check_address(mail_from)
            for rcpt in rcpt_to:
                check_address(rcpt)
        except ValueError as exc:
            return DeliveryResult(553, f"5.1.3 {exc}")
        # an internationalised address can only travel with SMTPUTF8 (RFC 6531)
        smtputf8 = smtputf8 or not (mail_from.isascii() and all(r.isascii() for r in rcpt_to))
        progress: list[str] = []  # "data" once the message data is on its way
        try:
            # waiting for a free connection counts against the deadline too
            async with asyncio.timeout(self.settings.timeout), self._slots:
                result = await self._send_pooled(mail_from, rcpt_to, data, smtputf8,
                                                 body8bit, progress)
        except TimeoutError:
            result = DeliveryResult(451, "4.4.2 next hop timed out", unknown=bool(progress))
        # our own 4.4.x: no conversation with the next hop (any reply of its own is one)
        self.error = f"{self.hop}: {result.text}" if result.code == 451 and \
            result.text.startswith("4.4.") else None
        return result

    async def _send_pooled(self, mail_from: str, rcpt_to: list[str], data: bytes,
                           smtputf8: bool, body8bit: bool, progress: list[str],
                           ) -> DeliveryResult:
        reused = False
        client: aiosmtplib.SMTP | None
        count: int
        while self._idle:
            client, count = self._idle.pop()
            if client.is_connected:
                reused = True
                break
        else:
            client, count = None, 0
        for attempt in (1, 2):
            if client is None:
                try:
                    client, count = await self._connect(), 0
                except (aiosmtplib.SMTPException, OSError) as exc:
                    log.warning("next_hop_unreachable", next_hop=str(self.hop), error=str(exc))
                    return DeliveryResult(451, "4.4.1 next hop unavailable, try again later")
            try:
                result = await self._transaction(client, mail_from, rcpt_to, data,
                                                 smtputf8, body8bit, progress)
            except asyncio.CancelledError:
                client.close()  # cut off mid-transaction (deadline): never reuse it
                raise
            except _StaleConnection:
                client.close()
                client = None
                if reused and attempt == 1:
                    reused = False
                    continue  # a pooled connection the server dropped: retry once, fresh
                return DeliveryResult(451, "4.4.2 next hop closed the connection")
            except (aiosmtplib.SMTPException, OSError) as exc:
                client.close()
                log.warning("next_hop_error", next_hop=str(self.hop), error=str(exc),
                            after_data=bool(progress))
                if progress:  # never sent again here: the next hop may well have it
                    return DeliveryResult(451, "4.4.2 next hop vanished after the message"
                                          " data", unknown=True)
                return DeliveryResult(451, "4.4.2 lost the next hop during the transaction")
            count += 1
            if client.is_connected and count < self.settings.max_messages_per_connection:
                self._idle.append((client, count))
            else:
                client.close()
            return result
        return DeliveryResult(451, "4.4.1 next hop unavailable")  # pragma: no cover

    async def _transaction(self, client: aiosmtplib.SMTP, mail_from: str, rcpt_to: list[str],
                           data: bytes, smtputf8: bool, body8bit: bool,
                           progress: list[str]) -> DeliveryResult:
        options: list[str] = []
        # aiosmtplib encodes addresses as ASCII unless told otherwise
        encoding = "utf-8" if smtputf8 else "ascii"
        if smtputf8:
            if not client.supports_extension("smtputf8"):
                await _reset(client)
                return DeliveryResult(553, "5.6.7 next hop does not support SMTPUTF8")
            options.append("SMTPUTF8")
        if body8bit and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            await client.mail(mail_from, options=options, encoding=encoding)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _StaleConnection from exc  # nothing was sent yet: safe to retry
        except aiosmtplib.SMTPSenderRefused as exc:
            await _reset(client)
            return DeliveryResult(exc.code, exc.message)
        refused: dict[str, tuple[int, str]] = {}
        for rcpt in rcpt_to:
            try:
                await client.rcpt(rcpt, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = (exc.code, exc.message)
        if len(refused) == len(rcpt_to):
            await _reset(client)
            # all refused: the "best" answer wins, so one temporary refusal means retry
            code, text = min(refused.values(), key=lambda r: r[0] >= 500)
            return DeliveryResult(code, text)
        progress.append("data")
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPDataError as exc:
            await _reset(client)
            return DeliveryResult(exc.code, exc.message)
        return DeliveryResult(response.code, response.message, refused)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                async with asyncio.timeout(2):
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


class _StaleConnection(Exception):
    """The pooled connection was closed by the server before anything was sent."""


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


class MaildirDelivery:
    """Deliver into a Maildir, for trying mailflow without a mail server.

    Written by hand rather than with ``mailbox.Maildir`` because that class
    does not fsync: a message must be on disk before the client hears 250.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._counter = 0
        self.error: str | None = None

    def _deliver(self, data: bytes) -> Path:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = f"{time.time():.6f}.M{self._counter}P{os.getpid()}.{socket.gethostname()}"
        name = name.replace("/", "_")
        tmp = self.path / "tmp" / name
        with open(tmp, "xb") as fh:
            fh.write(data.replace(b"\r\n", b"\n"))
            fh.flush()
            os.fsync(fh.fileno())
        final = self.path / "new" / name
        os.rename(tmp, final)
        dir_fd = os.open(self.path / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    async def send(self, mail_from: str, rcpt_to: list[str], data: bytes, *,
                   smtputf8: bool = False, body8bit: bool = False) -> DeliveryResult:
        envelope = (f"Return-Path: <{mail_from}>\r\n"
                    f"Delivered-To: {', '.join(rcpt_to)}\r\n").encode("utf-8", "replace")
        try:
            final = await asyncio.to_thread(self._deliver, envelope + data)
        except OSError as exc:
            log.error("maildir_write_failed", path=str(self.path), error=str(exc))
            self.error = f"cannot write the Maildir {self.path}: {exc}"
            return DeliveryResult(451, "4.3.0 cannot write the Maildir")
        self.error = None
        return DeliveryResult(250, f"2.0.0 delivered to {final.name}")

    async def close(self) -> None:
        return None


def next_hop_client(hop: NextHop, settings: RelaySettings, local_hostname: str) -> NextHopClient:
    if hop.kind == "maildir":
        return MaildirDelivery(hop.path)
    return SmtpRelay(hop, settings, local_hostname)
