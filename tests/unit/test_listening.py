"""Opening listeners and stopping sessions, without a daemon: the words of a bind error,
and what the session registry does at shutdown."""

from __future__ import annotations

import errno
import socket

import pytest

from mailflow.config import Settings
from mailflow.listening import ListenError, bind_socket, listen_error
from mailflow.smtp_sessions import SHUTTING_DOWN, SessionLimits


def test_a_taken_port_names_the_address_and_the_likely_cause() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            bind_socket(Settings(listen=f"127.0.0.1:{port}"))
    assert str(caught.value) == (f"cannot listen on 127.0.0.1:{port}: Address already in use"
                                 " (another mailflow or MTA running?)")
    assert caught.value.errno == errno.EADDRINUSE
    assert isinstance(caught.value, OSError)  # the CLI prints it as one line, exit 1


def test_the_words_for_other_listeners_and_causes() -> None:
    denied = OSError(errno.EACCES, "Permission denied")
    assert str(listen_error("::1", 25, denied, "submission")) == (
        "cannot listen on [::1]:25 (submission): Permission denied"
        " (ports below 1024 need root or CAP_NET_BIND_SERVICE)")
    taken = OSError(errno.EADDRINUSE, "Address already in use")
    assert str(listen_error("127.0.0.1", 9125, taken, "metrics")) == (
        "cannot listen on 127.0.0.1:9125 (metrics): Address already in use"
        " (another mailflow or another server on that port?)")
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert str(listen_error("nowhere.invalid", 2525, unknown)) == (
        "cannot listen on nowhere.invalid:2525: Name or service not known")


class FakeSession:
    def __init__(self) -> None:
        self.told: list[bool] = []

    def shut_down(self, now: bool = False) -> None:
        self.told.append(now)


async def test_stopping_tells_every_session_and_admits_no_new_one() -> None:
    limits = SessionLimits(total=10, per_client=5)
    sessions = [FakeSession(), FakeSession()]
    for session in sessions:
        assert limits.admit("192.0.2.1") is None
        limits.sessions.add(session)
    limits.shut_down()
    assert [s.told for s in sessions] == [[False], [False]]
    assert limits.admit("192.0.2.2") == SHUTTING_DOWN
    assert await limits.closed(within=0.05) is False  # both still open
    limits.shut_down(now=True)
    assert [s.told for s in sessions] == [[False, True], [False, True]]
    for session in sessions:
        limits.release("192.0.2.1")
        limits.sessions.discard(session)
    assert await limits.closed(within=0.05) is True
    assert limits.open == 0 and not limits.by_client
