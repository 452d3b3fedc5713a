"""The cells of ``make bench``: message size, concurrency and connection reuse, and the
distinct customer mail (bench/mailgen.py) each cell's rounds send.

The first two cells are those the targets of issue 29 apply to (10 KB, one message a
connection, 20 and 200 sessions); the others are reported, not targeted. Each cell's
traffic is one seeded stream of ``rounds x messages`` distinct messages cut into rounds:
every round sends mail no target has seen (a round sent again would be copies only), and
a follow-up or a copy may refer to a message of an earlier round, as in real traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import load
import mailgen

KB = 1024


@dataclass(frozen=True)
class Cell:
    key: str
    size: int  # bytes a message
    sessions: int  # concurrent sessions
    per_connection: int  # messages a connection
    messages: int  # a round's
    targeted: bool  # issue 29's targets apply to it

    @property
    def title(self) -> str:
        size = f"{self.size // (KB * KB)} MB" if self.size >= KB * KB else f"{self.size // KB} KB"
        per = ("1 msg/conn" if self.per_connection == 1
               else f"{self.per_connection} msg/conn")
        return f"{size}, {per}, {self.sessions} sessions"


CELLS = (
    Cell("10k-s20", 10 * KB, 20, 1, 1000, True),
    Cell("10k-s200", 10 * KB, 200, 1, 1000, True),
    Cell("10k-s20-reuse", 10 * KB, 20, 10, 1000, False),
    Cell("2k-s20", 2 * KB, 20, 1, 1000, False),
    Cell("1m-s20", KB * KB, 20, 1, 200, False),
)
BY_KEY = {cell.key: cell for cell in CELLS}


@dataclass(frozen=True)
class Round:
    """One round's messages, ready for the wire, and what the labels expect of them."""

    wire: list[load.Outgoing]
    labels: list[mailgen.Label]

    @property
    def acks_expected(self) -> int:
        return sum(label.ack for label in self.labels)


def traffic(cell: Cell, rounds: int, seed: int) -> list[Round]:
    """``rounds`` rounds of ``cell.messages`` distinct messages of ``cell.size``, from one
    seeded stream (``seed``: the same bytes each time for the same arguments)."""
    mails = mailgen.Generator(seed, cell.size).generate(rounds * cell.messages)
    return [cut(mails[start:start + cell.messages], start)
            for start in range(0, len(mails), cell.messages)]


def cut(mails: Sequence[mailgen.Mail], offset: int) -> Round:
    """A round of the stream beginning at ``offset``: a message referring to one of an
    earlier round (sent and answered already) waits for nothing."""
    wire = []
    for mail in mails:
        label = mail.label
        parent = label.parent - offset if label.parent is not None else None
        after = parent if parent is not None and parent >= 0 else None
        wire.append(load.outgoing(label.mail_from, [label.rcpt_to], mail.data,
                                  label.eight_bit, after))
    return Round(wire, [mail.label for mail in mails])


def selected(keys: Sequence[str] | None, messages: int | None,
             big_messages: int | None) -> list[Cell]:
    """The cells named (all by default), with a round's messages changed if asked:
    ``messages`` for the cells under 1 MB, ``big_messages`` for the 1 MB one."""
    cells = [BY_KEY[key] for key in keys] if keys else list(CELLS)
    changed = []
    for cell in cells:
        count = big_messages if cell.size >= KB * KB else messages
        changed.append(cell if count is None else Cell(
            cell.key, cell.size, cell.sessions, cell.per_connection, count, cell.targeted))
    return changed
