"""aiosmtpd's ``SMTP.__init__`` without its introspection at every connection.

aiosmtpd 1.4.6 builds three tables for each new connection: its ``smtp_*`` command
methods (``dir``), the handler's ``handle_*`` hooks (``dir``) and the AUTH mechanisms
(``inspect.getmembers`` of the protocol and of the handler), and it reads the EHLO
hook's signature. That is about 0.15 ms of CPU a connection, more than the rest of the
set-up together, and the tables depend only on the protocol's class and the handler.
:func:`init` works out their names once per (class, handler) and binds them to each new
protocol; everything else is set as ``SMTP.__init__`` sets it, for the arguments
:class:`mailflow.smtp.MailflowSMTP` passes.

It mirrors aiosmtpd 1.4.6, the version pyproject.toml pins (``MIRRORS``); with any
other, MailflowSMTP calls ``SMTP.__init__``. tests/unit/test_smtp_connection.py checks that
both make the same protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import weakref
from dataclasses import dataclass
from typing import Any
from warnings import warn

import aiosmtpd
from aiosmtpd import smtp as aiosmtpd_smtp

MIRRORS = aiosmtpd.__version__ == "1.4.6"


@dataclass(frozen=True)
class Recipe:
    """The names behind a protocol's tables, for one class and one handler."""

    commands: tuple[tuple[str, str], ...]  # (command, method of the protocol)
    hooks: tuple[tuple[str, str], ...]  # (command, method of the handler)
    auth: tuple[tuple[str, str, bool], ...]  # (mechanism, method, the protocol's own)
    ehlo: str | None  # which handle_EHLO signature the handler has: "old", "new"


_RECIPES: weakref.WeakKeyDictionary[Any, dict[type, Recipe]] = weakref.WeakKeyDictionary()


def recipe(protocol: type, handler: Any) -> Recipe:
    """The names aiosmtpd's ``__init__`` would find, worked out once."""
    known = _RECIPES.setdefault(handler, {})
    found = known.get(protocol)
    if found is None:
        found = known[protocol] = _work_out(protocol, handler)
    return found


def _work_out(protocol: type, handler: Any) -> Recipe:
    auth = []
    for owner, own in ((protocol, True), (handler, False)):
        for name, member in inspect.getmembers(owner):
            if name.startswith("auth_"):
                mechanism = getattr(member, "__auth_mechanism_name__",
                                    name.replace("auth_", "").replace("__", "-"))
                auth.append((mechanism, name, own))
    hooks = tuple((m.replace("handle_", ""), m) for m in dir(handler) if m.startswith("handle_"))
    ehlo = None
    if hasattr(handler, "handle_EHLO"):
        count = len(inspect.signature(handler.handle_EHLO).parameters)
        if count not in (4, 5):
            raise RuntimeError("Unsupported EHLO Hook")
        ehlo = "old" if count == 4 else "new"
    commands = tuple((m.replace("smtp_", ""), m) for m in dir(protocol) if m.startswith("smtp_"))
    return Recipe(commands, hooks, tuple(auth), ehlo)


def init(smtp: aiosmtpd_smtp.SMTP, handler: Any, *, data_size_limit: int | None,
         enable_SMTPUTF8: bool, decode_data: bool, hostname: str | None, ident: str | None,
         tls_context: ssl.SSLContext | None, require_starttls: bool, timeout: float,
         auth_require_tls: bool) -> None:
    """``SMTP.__init__(smtp, handler, …)`` of aiosmtpd 1.4.6 for these arguments (no AUTH
    callback or authenticator, no call limits, no PROXY protocol), its tables bound from
    the recipe of ``type(smtp)`` and ``handler``."""
    made = recipe(type(smtp), handler)
    smtp.__ident__ = ident or aiosmtpd_smtp.__ident__
    smtp.loop = aiosmtpd_smtp.make_loop()
    asyncio.StreamReaderProtocol.__init__(
        smtp, asyncio.StreamReader(loop=smtp.loop, limit=smtp.line_length_limit),
        client_connected_cb=smtp._cb_client_connected, loop=smtp.loop)
    smtp.event_handler = handler
    smtp.data_size_limit = data_size_limit
    smtp.enable_SMTPUTF8 = enable_SMTPUTF8
    smtp._decode_data = decode_data
    smtp.command_size_limits.clear()
    smtp.hostname = hostname if hostname else socket.getfqdn()
    smtp.tls_context = tls_context
    if tls_context:
        if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
            aiosmtpd_smtp.log.warning("tls_context.verify_mode not in {CERT_NONE, "
                                      "CERT_OPTIONAL}; this might cause client "
                                      "connection problems")
        elif tls_context.check_hostname:
            aiosmtpd_smtp.log.warning("tls_context.check_hostname == True; "
                                      "this might cause client connection problems")
    smtp.require_starttls = tls_context and require_starttls
    smtp._timeout_duration = timeout
    smtp._timeout_handle = None
    smtp._tls_handshake_okay = True
    smtp._tls_protocol = None
    smtp._original_transport = None
    smtp.session = None
    smtp.envelope = None
    smtp.transport = None
    smtp._handler_coroutine = None
    smtp._auth_require_tls = auth_require_tls
    smtp._proxy_timeout = None
    smtp._auth_callback = aiosmtpd_smtp.login_always_fail
    smtp._authenticator = None
    smtp._auth_required = False
    smtp._auth_methods = {
        mechanism: aiosmtpd_smtp._AuthMechAttr(getattr(smtp if own else handler, name), own)
        for mechanism, name, own in made.auth}
    smtp._handle_hooks = {command: getattr(handler, name) for command, name in made.hooks}
    if made.ehlo == "old":
        warn("Use the 5-argument handle_EHLO() hook instead of the 4-argument handle_EHLO()"
             " hook; support for the 4-argument handle_EHLO() hook will be removed in"
             " version 2.0", DeprecationWarning, stacklevel=2)
    smtp._ehlo_hook_ver = made.ehlo
    smtp._smtp_methods = {command: getattr(smtp, name) for command, name in made.commands}
    smtp._enforce_call_limit = False
