"""What a new SMTP connection costs: the protocol set up without aiosmtpd's introspection
(:mod:`mailflow.smtp_init`) is the protocol ``SMTP.__init__`` makes (the same
attributes, the same command, hook and AUTH tables bound to the new protocol), and a
plugin hook that nobody implements is not called (no timer armed for it)."""

from __future__ import annotations

import asyncio
import types
import weakref
from typing import Any

import pluggy
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session, auth_mechanism

from mailflow import hookspecs, smtp_handler, smtp_init
from mailflow.config import Settings
from mailflow.hookspecs import hookimpl
from mailflow.session import SessionInfo, SmtpReply
from mailflow.smtp import MailflowSMTP
from mailflow.smtp_handler import Handler
from mailflow.smtp_sessions import SessionLimits


class PlainHandler:
    """A handler with hooks, a 4-argument EHLO hook and an AUTH mechanism of its own."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        return "250 HELP"

    @auth_mechanism("X-TOKEN")
    async def auth_TOKEN(self, server: SMTP, args: list[str]) -> Any:
        return None


def handlers() -> list[Any]:
    settings = Settings(smtp={"hostname": "mx.example.com"})  # type: ignore[arg-type]
    real = Handler.__new__(Handler)  # its hooks only: the tables depend on nothing else
    real.settings = settings
    return [real, PlainHandler()]


def same(fast: Any, slow: Any, fast_owner: object, slow_owner: object) -> bool:
    """Two attribute values alike: bound to their own protocol, or equal."""
    if isinstance(fast, types.MethodType):
        owner_ok = fast.__self__ is fast_owner or fast.__self__ is slow.__self__
        return isinstance(slow, types.MethodType) and fast.__func__ is slow.__func__ and owner_ok
    if isinstance(fast, dict):
        return fast.keys() == slow.keys() and all(
            same(fast[k], slow[k], fast_owner, slow_owner) for k in fast)
    if isinstance(fast, tuple) and hasattr(fast, "_fields"):  # aiosmtpd's _AuthMechAttr
        return all(same(a, b, fast_owner, slow_owner) for a, b in zip(fast, slow, strict=True))
    if isinstance(fast, asyncio.StreamReader | asyncio.Future | weakref.ref):
        return type(fast) is type(slow)
    return bool(fast == slow)


@pytest.mark.parametrize("handler", handlers(), ids=["Handler", "PlainHandler"])
@pytest.mark.filterwarnings("ignore:Use the 5-argument handle_EHLO:DeprecationWarning")
async def test_the_same_protocol_as_aiosmtpd_makes(handler: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert smtp_init.MIRRORS, "aiosmtpd is no longer 1.4.6: check smtp_init against it"
    settings = Settings(smtp={"hostname": "mx.example.com"})  # type: ignore[arg-type]
    limits = SessionLimits(10, 10)
    fast = MailflowSMTP(handler, settings, limits, None)
    monkeypatch.setattr(smtp_init, "MIRRORS", False)
    slow = MailflowSMTP(handler, settings, limits, None)
    assert vars(fast).keys() == vars(slow).keys()
    different = [name for name, value in vars(fast).items()
                 if not same(value, vars(slow)[name], fast, slow)]
    assert different == []
    assert fast._smtp_methods["DATA"].__self__ is fast
    assert (fast._stream_reader._limit == slow._stream_reader._limit
            == settings.smtp.max_line_length)
    if isinstance(handler, PlainHandler):
        assert fast._ehlo_hook_ver == "old"
        assert "X-TOKEN" in fast._auth_methods and not fast._auth_methods["X-TOKEN"].is_builtin
        assert fast._auth_methods["LOGIN"].method.__self__ is fast


async def test_the_names_are_worked_out_once_per_class_and_handler() -> None:
    handler = PlainHandler()
    first = smtp_init.recipe(MailflowSMTP, handler)
    assert smtp_init.recipe(MailflowSMTP, handler) is first
    assert smtp_init.recipe(SMTP, handler) is not first
    assert ("DATA", "smtp_DATA") in first.commands
    assert ("XFORWARD", "smtp_XFORWARD") in first.commands
    assert ("DATA", "handle_DATA") in first.hooks


class Refuser:
    """A plugin refusing every sender."""

    @hookimpl
    def mailflow_mail_from(self, session: SessionInfo, address: str, options: Any,
                           host: Any) -> SmtpReply:
        return SmtpReply(550, "no", "5.7.1")


def asking_handler(pm: pluggy.PluginManager) -> Handler:
    handler = Handler.__new__(Handler)
    handler.settings = Settings()
    handler._pm_of = lambda: pm
    handler._options_of = dict
    handler._host = None
    return handler


async def test_a_hook_no_plugin_implements_arms_no_timer(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    session = SessionInfo(peer="192.0.2.1", port=25, trusted=False, relay_trusted=False,
                          via="192.0.2.1")

    def no_timer(delay: float | None) -> Any:
        raise AssertionError("a timer for a hook nobody implements")

    monkeypatch.setattr(smtp_handler.asyncio, "timeout", no_timer)
    assert await asking_handler(pm)._ask("mailflow_mail_from", session=session,
                                         address="a@client.test") is None
    monkeypatch.undo()
    pm.register(Refuser(), name="refuser")
    reply = await asking_handler(pm)._ask("mailflow_mail_from", session=session,
                                          address="a@client.test")
    assert reply is not None and reply.startswith("550")
