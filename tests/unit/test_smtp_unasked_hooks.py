"""What an SMTP command costs: a plugin hook that nobody implements is not called (no
timer armed for it); one a plugin implements is asked."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest

from mailflow import hookspecs, smtp_handler
from mailflow.config import Settings
from mailflow.hookspecs import hookimpl
from mailflow.session import SessionInfo, SmtpReply
from mailflow.smtp_handler import Handler


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
