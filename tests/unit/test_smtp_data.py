"""Reading DATA in blocks (mailflow.smtp_data) gives what aiosmtpd's line-by-line
reading gives, wherever the client's packets end; and the protocol lists its commands
and hooks as aiosmtpd would."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.config import Settings
from mailflow.smtp import MailflowSMTP
from mailflow.smtp_data import TOO_LONG, TOO_MUCH, Data, LineLengths, read_data, unstuff
from mailflow.smtp_handler import Handler
from mailflow.smtp_sessions import SessionLimits

AFTER = b"QUIT\r\n"  # what a pipelining client sends after its dot: never read as message


def line_by_line(stream: bytes, max_size: int, max_line: int) -> tuple[Data, bytes]:
    """aiosmtpd 1.4's DATA loop, over a whole stream: the reference (and what follows the
    lone dot)."""
    lines, size, state, start = [], 0, None, 0
    while True:
        end = stream.index(b"\r\n", start) + 2
        line, start = stream[start:end], end
        if line == b".\r\n":
            break
        size += len(line)
        if state is None and size > max_size:
            state = TOO_MUCH
        if state is None and len(line) > max_line:
            state = TOO_LONG
        lines.append(line[1:] if line.startswith(b".") else line)
    rest = stream[start:]
    return (Data(refusal=state) if state else Data(content=b"".join(lines))), rest


async def read_in_pieces(stream: bytes, cuts: list[int], max_size: int, max_line: int,
                         ) -> tuple[Data, bytes]:
    """``read_data`` on a real StreamReader fed ``stream`` cut at ``cuts``, with the
    limit aiosmtpd gives it (the line limit), and what is left unread after."""
    reader = asyncio.StreamReader(limit=max_line)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]

    async def feed() -> None:
        for a, b in itertools.pairwise(bounds):
            reader.feed_data(stream[a:b])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    data = await read_data(reader, max_size, max_line)
    await feeding
    return data, await reader.read()


def run(stream: bytes, cuts: list[int] = [], max_size: int = 10_000,  # noqa: B006
        max_line: int = 1000) -> tuple[Data, bytes]:
    return asyncio.run(read_in_pieces(stream, cuts, max_size, max_line))


# lines made of the bytes that matter: dots, CR, LF, and a letter
_LINE = st.lists(st.sampled_from([b".", b"\r", b"\n", b"a", b"\r\n", b".."]), max_size=12)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINE.map(b"".join), max_size=12), cuts=st.lists(st.integers(0, 400),
       max_size=6), max_size=st.integers(1, 80), max_line=st.integers(8, 30))
def test_any_message_cut_anywhere_reads_as_aiosmtpd_reads_it(
        lines: list[bytes], cuts: list[int], max_size: int, max_line: int) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n"
    expected, rest = line_by_line(stream + AFTER, max_size, max_line)
    got, left = run(stream + AFTER, cuts, max_size, max_line)
    assert left == rest  # a lone "." line ends it early: the rest is the next command's
    if expected.refusal is None:
        assert got == expected
    else:  # both limits broken: which one is said first may differ within one read
        assert got.refusal in (TOO_LONG, TOO_MUCH) and not got.content


@pytest.mark.parametrize("stream, content", [
    (b".\r\n", b""),
    (b"\r\n.\r\n", b"\r\n"),
    (b"a\r\n.\r\n", b"a\r\n"),
    (b"..\r\n.\r\n", b".\r\n"),
    (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
    (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n"),
    (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),  # bare LFs end no line
])
def test_the_lone_dot_ends_and_stuffing_goes(stream: bytes, content: bytes) -> None:
    for cut in range(len(stream) + 1):
        assert run(stream + AFTER, [cut]) == (Data(content=content), AFTER), cut


def test_a_big_message_is_read_across_the_stream_limit() -> None:
    body = b"".join(b"line %d .\r\n.dot\r\n" % i for i in range(5000))
    data, left = run(body + b".\r\n" + AFTER, [7, 70_001], max_size=1 << 20, max_line=1000)
    assert data.content == body.replace(b"\r\n.dot", b"\r\ndot") and left == AFTER


def test_limits_refuse_after_the_dot_and_keep_nothing() -> None:
    assert run(b"a" * 1001 + b"\r\n.\r\n" + AFTER)[0] == Data(refusal=TOO_LONG)
    long_line = b"b" * 50_000 + b"\r\n.\r\n"
    assert run(long_line + AFTER, max_size=1 << 20)[0] == Data(refusal=TOO_LONG)
    proper = b"c" * 998 + b"\r\n"
    assert run(proper * 3 + long_line + AFTER, [len(proper) * 3], max_size=2500)[0] == Data(
        refusal=TOO_MUCH)
    exactly = b"x" * 98 + b"\r\n"
    assert run(exactly + b".\r\n", max_size=100)[0] == Data(content=exactly)
    assert run(b"y" + exactly + b".\r\n", max_size=100)[0] == Data(refusal=TOO_MUCH)


def test_line_lengths_count_a_crlf_cut_between_reads() -> None:
    lines = LineLengths(limit=6)
    assert not lines.too_long(b"abcd\r")  # "abcd\r\n" is 6: not over
    assert not lines.too_long(b"\nabcd")
    assert lines.too_long(b"e\r\n")  # "abcde\r\n" is 7
    assert unstuff(b".a\r\n..b\r\n") == b"a\r\n.b\r\n"


def test_the_protocol_lists_what_aiosmtpd_would_list() -> None:
    handler = Handler.__new__(Handler)
    limits = SessionLimits(total=10, per_client=10)

    async def make() -> MailflowSMTP:
        return MailflowSMTP(handler, Settings(), limits, None)

    server = asyncio.run(make())
    every = object.__dir__(server)
    assert set(server._smtp_methods) == {n[5:] for n in every if n.startswith("smtp_")}
    assert {"DATA", "XFORWARD", "EHLO"} <= set(server._smtp_methods)
    assert set(server._handle_hooks) == {
        n[7:] for n in object.__dir__(handler) if n.startswith("handle_")}
    assert {"DATA", "MAIL", "RCPT"} <= set(server._handle_hooks)
    assert {"LOGIN", "PLAIN"} <= set(server._auth_methods)
    assert server._ehlo_hook_ver == "new"  # the EHLO hook's signature, read once
