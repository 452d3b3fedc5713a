"""A raw SMTP client for hostile-input tests: it sends exactly the bytes it is given
(smtplib would clean them), and can switch to TLS after STARTTLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct

CRLF = b"\r\n"

class RawClient:
    """An SMTP client over a plain socket (TLS after STARTTLS), no cleaning of any kind."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port),
                                                            timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while CRLF not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(CRLF)
        return line

    def reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if line[3:4] != b"-":
                break
        return int(lines[-1][:3]), b"\n".join(line[4:] for line in lines)

    def cmd(self, line: bytes) -> tuple[int, bytes]:
        self.send(line + CRLF)
        return self.reply()

    def greet(self, name: bytes = b"client.test") -> bytes:
        code, text = self.reply()
        assert code == 220, text
        code, text = self.cmd(b"EHLO " + name)
        assert code == 250, text
        return text

    def envelope(self, mail_from: bytes = b"<customer@client.test>",
                 rcpt: bytes = b"<sav@example.com>") -> None:
        code, text = self.cmd(b"MAIL FROM:" + mail_from)
        assert code == 250, text
        code, text = self.cmd(b"RCPT TO:" + rcpt)
        assert code == 250, text
        code, text = self.cmd(b"DATA")
        assert code == 354, text

    def starttls(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def is_closed(self, wait: float = 5.0) -> bool:
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def reset(self) -> None:
        """Vanish: close with RST, as a crashed client or a cut cable would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def quit(self) -> None:
        """End the session politely: the server must still answer ``221``."""
        code, text = self.cmd(b"QUIT")
        assert code == 221, text
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
