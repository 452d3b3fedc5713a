"""XFORWARD attributes as Postfix sends them, and what is refused."""

from __future__ import annotations

import ipaddress

import pytest

from mailflow.session import SessionInfo
from mailflow.xforward import Forwarded, XforwardError, parse

NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


def test_postfix_attributes_are_read() -> None:
    told = parse("NAME=mx.client.test ADDR=192.0.2.7 PORT=41234 HELO=mx.client.test")
    told = parse("PROTO=ESMTP SOURCE=REMOTE IDENT=4F1A2B", told)  # incremental
    assert told == Forwarded(name="mx.client.test", addr="192.0.2.7", port=41234,
                             proto="ESMTP", helo="mx.client.test", ident="4F1A2B",
                             source="REMOTE")


def test_ipv6_unavailable_and_xtext() -> None:
    told = parse("ADDR=IPv6:2001:db8::1 NAME=[UNAVAILABLE] HELO=a+2Bb")
    assert (told.addr, told.name, told.helo) == ("2001:db8::1", None, "a+b")


@pytest.mark.parametrize("arg", [
    "", "ADDR", "ADDR=not-an-address", "PORT=70000", "PORT=x", "COLOR=red",
    "HELO=evil+0D+0AMAIL", "HELO=" + "a" * 300, "NAME=caf\u00e9", "HELO=a+00b",
])
def test_hostile_or_broken_values_are_refused(arg: str) -> None:
    with pytest.raises(XforwardError) as refused:
        parse(arg)
    reply = str(refused.value)
    assert reply.startswith("501 5.5.4 ") and "\r" not in reply and "\n" not in reply
    assert "evil" not in reply and "aaaa" not in reply  # never echoed verbatim


def test_the_forwarded_client_decides_trust_for_one_transaction() -> None:
    info = SessionInfo(peer="127.0.0.1", trusted=True, relay_trusted=True, via="127.0.0.1",
                       via_helo="localhost", helo="localhost")
    info.forward(parse("ADDR=192.0.2.7 HELO=mx.client.test"), NETWORKS)
    assert (info.peer, info.helo, info.trusted, info.relay_trusted) == (
        "192.0.2.7", "mx.client.test", False, True)
    info.end_transaction()
    assert (info.peer, info.helo, info.trusted) == ("127.0.0.1", "localhost", True)
    info.forward(parse("ADDR=10.1.2.3"), NETWORKS)  # an agent's PC on the office network
    assert info.trusted
