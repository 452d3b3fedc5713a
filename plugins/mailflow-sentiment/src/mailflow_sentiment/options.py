"""The ``sentiment:`` rules section, shared by the stage, the digest and the hooks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mailflow.plugin import Model, StageOptions

_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class DigestOptions(Model):
    """The daily digest of the most negative cases, to the supervisors."""

    at: str = Field("09:00", description="when, on each business day of the default"
                    " calendar, in its time zone (HH:MM, within business hours)")
    to: dict[str, str] = Field(default_factory=dict, description="route -> supervisor's"
                               " address; '*' for every route not listed (none: no digest)")
    limit: int = Field(10, ge=1, le=100, description="cases listed at most, per supervisor")

    @field_validator("at")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):
            raise ValueError(f"'{value}' is not a time of day (HH:MM)")
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for route, address in value.items():
            if "@" not in address.strip("@") or any(c.isspace() for c in address):
                raise ValueError(f"route '{route}': '{address}' is not an address")
        return {route: address.strip().lower() for route, address in value.items()}

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = self.at.split(":")
        return int(hour), int(minute)


class SentimentOptions(StageOptions):
    """The ``sentiment:`` rules section."""

    weight: float = Field(5.0, description="triage points a negative message adds (0: none;"
                          " the prioritise thresholds say what they make)")
    positive_weight: float = Field(0.0, description="triage points a positive message adds")
    default_language: Literal["fr", "en"] = Field(
        "fr", description="the language scored when the guess is unsure (other languages"
        " are not scored)")
    digest: DigestOptions = DigestOptions()
