"""Stage ``headers``: add fixed headers to every relayed message.

Purpose: mark mail that passed this gateway (e.g. for a mail-server rule)
without writing Python. Configuration (rules section ``headers``)::

    headers:
      add:
        X-Mailflow-Gateway: sav-gateway-1

Verdicts: none. Metrics: none of its own (stage timing is generic).
Log events: none. Values are sanitised: a value can never start a new header.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator

from mailflow.hookspecs import hookimpl
from mailflow.stage import MessageContext, Stage, StageOptions


class HeadersOptions(StageOptions):
    add: dict[str, str] = Field(default_factory=dict)

    @field_validator("add")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(c in name for c in ": \t\r\n") or not name.isascii():
                raise ValueError(f"'{name}' is not a valid header name")
        return value


class HeadersStage(Stage[HeadersOptions]):
    name = "headers"
    description = "add fixed headers to every relayed message"
    on_error = "skip"

    async def process(self, ctx: MessageContext) -> None:
        options = self.options
        for header, value in options.add.items():
            ctx.set_header(header, value)
        if options.add:
            ctx.note(added=sorted(options.add))


@hookimpl(trylast=True)
def mailflow_stages() -> Iterable[type[Stage[Any]]]:
    return [HeadersStage]
