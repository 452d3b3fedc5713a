"""MAIL FROM and RCPT TO addresses read by RFC 5321, exactly as the client wrote them."""

from __future__ import annotations

from email._header_value_parser import get_angle_addr

import pytest

from mailflow.smtp_paths import parse_path

EXACT = [
    "=?UTF-16?B?//492Enc?=@example.org",
    "=?utf-8?q?a=20b?=@x.test",
    '"john doe"@client.test',
    '"a@b"@client.test',
    '"john"@x.test',
    '"=?utf-8?q?x?="@e.test',
    '"a\\"b"@x.test',
    '"a>b"@x.test',
    "Joe.Bloggs+tag@X.TEST",
    "jöhn.dœ@client.test",
    "taro..@docomo.ne.jp",
    "user@[192.0.2.1]",
    "user@[IPv6:::1]",
    "postmaster",
]


@pytest.mark.parametrize("address", EXACT)
def test_the_address_is_kept_as_written(address: str) -> None:
    assert parse_path(f"<{address}>") == (address, "")
    assert parse_path(f"<{address}> SMTPUTF8 BODY=8BITMIME") == (address,
                                                                 "SMTPUTF8 BODY=8BITMIME")


def test_a_header_parser_would_have_changed_them() -> None:
    """What aiosmtpd's own reading (email's header parser) does to the same paths."""
    changed = {a: get_angle_addr(f"<{a}>")[0].addr_spec
               for a in ["=?UTF-16?B?//492Enc?=@example.org", "=?utf-8?q?a=20b?=@x.test",
                         '"john"@x.test', '"=?utf-8?q?x?="@e.test']}
    assert list(changed.values()) == ["👉@example.org", '"a b"@x.test', "john@x.test",
                                      "x@e.test"]


def test_null_path_source_route_and_bare_address() -> None:
    assert parse_path("<>") == ("<>", "")
    assert parse_path("<> BODY=8BITMIME") == ("<>", "BODY=8BITMIME")
    assert parse_path("<@relay.test,@b.test:joe@x.test>") == ("joe@x.test", "")
    assert parse_path("joe@x.test SIZE=100") == ("joe@x.test", "SIZE=100")
    assert parse_path("") == ("", "")


@pytest.mark.parametrize("arg", ["<joe @ x.test>", "<(comment)joe@x.test>", "<a;b@x.test>",
                                 "<a@b.test.>", "<a@>", "<@a.test:>", "<a@b.test",
                                 '<"unterminated@x.test>', "<a@b@c.test>", "<a@[b[c]>"])
def test_malformed_paths_are_refused(arg: str) -> None:
    assert parse_path(arg) == (None, None)


def test_local_part_limit() -> None:
    assert parse_path("<" + "a" * 64 + "@x.test>", 64)[0] == "a" * 64 + "@x.test"
    assert parse_path("<" + "a" * 65 + "@x.test>", 64) == (None, None)


@pytest.mark.parametrize("address", ["cust\udcffomer@client.test", "a\rb@x", "a\x00b@x",
                                     "sav\r@example.com", "a\tb@x", '"a\x01"@x',
                                     "a@exa\x7fmple.com"])
def test_what_the_relay_cannot_send_is_left_to_the_handler(address: str) -> None:
    """Bytes that were not UTF-8 (lone surrogates in aiosmtpd) and control characters:
    the handler refuses them with a 501 naming the sender or the recipient."""
    assert parse_path(f"<{address}>") == (address, "")


def test_long_hostile_paths_are_linear() -> None:
    import time

    started = time.perf_counter()
    for arg in ["<" + "a." * 50_000 + "@x>", '<"' + "\\a" * 50_000, "<" + "a" * 100_000,
                "<a@" + "b-" * 50_000 + ".>"]:
        parse_path(arg)
    assert time.perf_counter() - started < 1.0
