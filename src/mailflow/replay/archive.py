"""Reading an archive for a replay: an mbox, a Maildir or a folder of ``.eml`` files.

Each message comes back with the envelope it most likely had and the time it
arrived, since an archive keeps neither:

- the sender is ``Return-Path`` (what the delivering MTA wrote), else the From
  address;
- the recipients are ``Delivered-To`` / ``X-Original-To`` (the mailbox it was
  delivered to), else the To and Cc addresses in the local domains, else all of
  them;
- the time is that of the newest ``Received`` header (when the company's server
  took it), else the ``Date``, else the previous message's.

Python's :mod:`mailbox` reads the formats; the bytes are kept as stored (an mbox's
``From_`` line dropped, ``>From`` left as the file has it).
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial
from pathlib import Path

from mailflow.message import Envelope

_HEADERS = BytesHeaderParser(policy=default)
_ANGLE = re.compile(r"<([^<>\s]*)>")


@dataclass(frozen=True)
class Archived:
    """One message of an archive, as a replay receives it: its bytes are read again when
    its turn comes (a year of mail is sorted by time without holding it all in memory)."""

    source: str  # where it was: the file, or the mbox and its position
    load: Callable[[], bytes] = field(repr=False)
    envelope: Envelope
    at: float  # when it arrived (Unix time)
    sent: bool = False  # from the Sent archive: an agent's reply

    @property
    def raw(self) -> bytes:
        return self.load()


def _paths(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, how to read its bytes) of each message of an mbox, a Maildir or a folder
    of files."""
    if archive.is_file():
        box = mailbox.mbox(archive, create=False)  # kept open for the loads to come
        for key in box.iterkeys():
            yield f"{archive.name}#{key}", partial(box.get_bytes, key)
        return
    if (archive / "cur").is_dir() or (archive / "new").is_dir():
        maildir = mailbox.Maildir(archive, factory=None, create=False)
        for key in sorted(maildir.iterkeys()):
            yield f"{archive.name}/{key}", partial(maildir.get_bytes, key)
        return
    for path in sorted(p for p in archive.rglob("*") if p.is_file()
                       and not p.name.startswith(".")):
        yield str(path.relative_to(archive)), path.read_bytes


def _time(received: Sequence[str], date: str) -> float | None:
    """When the company's server took it: the newest Received's date, else Date."""
    candidates = [received[0].rpartition(";")[2]] if received else []
    candidates.append(date)
    for text in candidates:
        try:
            return parsedate_to_datetime(text.strip()).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
    return None


def _addresses(values: Sequence[str]) -> list[str]:
    return [addr for _, addr in getaddresses(list(values)) if "@" in addr]


def envelope_of(raw: bytes, is_local: Callable[[str], bool], *, sent: bool = False,
                ) -> tuple[Envelope, float | None]:
    """The envelope a message most likely had, and when it arrived."""
    head = _HEADERS.parsebytes(raw)
    sender = ""
    return_path = [_ANGLE.findall(str(v)) or [str(v).strip()] for v in head.get_all(
        "Return-Path", [])]
    if return_path and not sent:
        sender = return_path[0][0] if return_path[0] else ""
    else:
        found = _addresses([str(v) for v in head.get_all("From", [])])
        sender = found[0] if found else ""
    delivered = _addresses([str(v) for name in ("Delivered-To", "X-Original-To")
                            for v in head.get_all(name, [])])
    written = _addresses([str(v) for name in ("To", "Cc") for v in head.get_all(name, [])])
    # a reply goes to whom it was written to; mail in was delivered to our mailbox
    recipients = written if sent else (delivered or [a for a in written if is_local(a)]
                                       or written)
    received = [str(v) for v in head.get_all("Received", [])]
    at = _time(received, str(head.get("Date", "")))
    return Envelope(mail_from=sender, rcpt_to=tuple(dict.fromkeys(recipients)),
                    peer="192.0.2.1", helo="replay"), at


def read(archives: Sequence[Path], is_local: Callable[[str], bool], *,
         sent: Sequence[Path] = ()) -> list[Archived]:
    """Every message of ``archives`` (and of the ``sent`` archives, as agents' replies),
    in the order they arrived; one without any time takes the previous one's."""
    found: list[Archived] = []
    for folder, is_sent in [*((a, False) for a in archives), *((a, True) for a in sent)]:
        last = 0.0
        for name, load in _paths(Path(folder)):
            envelope, at = envelope_of(load(), is_local, sent=is_sent)
            last = at if at is not None else last
            found.append(Archived(name, load, envelope, last, is_sent))
    return sorted(found, key=lambda item: item.at)


__all__ = ["Archived", "envelope_of", "read"]
