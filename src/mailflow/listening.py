"""Opening the listeners: the SMTP and submission sockets, bound before any worker forks,
and the words for a listener that cannot be opened.

A taken port is the most common start failure (another mailflow, or the MTA on
the same port): it is told in one line naming the address, never a traceback.
"""

from __future__ import annotations

import errno
import socket
import ssl

from mailflow.config import Settings, parse_host_port

_LISTEN_HINTS = {
    errno.EADDRINUSE: "another mailflow or MTA running?",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
}


class ListenError(OSError):
    """A listener that cannot be opened: one line an operator can act on."""


def listen_error(host: str, port: int, exc: OSError, purpose: str = "") -> ListenError:
    """``cannot listen on 127.0.0.1:2525: Address already in use (another mailflow or MTA
    running?)``; ``purpose`` names a listener other than the SMTP one."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = exc.strerror or str(exc)
    hint = _LISTEN_HINTS.get(exc.errno or 0)
    if exc.errno == errno.EADDRINUSE and purpose == "metrics":
        hint = "another mailflow or another server on that port?"
    error = ListenError(f"cannot listen on {where}{f' ({purpose})' if purpose else ''}: "
                        f"{reason}{f' ({hint})' if hint else ''}")
    error.errno = exc.errno
    return error


def bind_socket(settings: Settings, reuse_port: bool = False,
                listen: str | None = None, purpose: str = "") -> socket.socket:
    """The listening socket (``listen``, else the main one), bound before any worker starts."""
    host, port = parse_host_port(listen or settings.listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise listen_error(host, port, exc, purpose) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(settings.smtp.backlog)
    except OSError as exc:
        sock.close()
        raise listen_error(host, port, exc, purpose) from None
    sock.setblocking(False)
    return sock


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    smtp = settings.smtp
    if not smtp.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(smtp.tls_cert, smtp.tls_key or None)
    return context
