"""The ``answers:`` section: where the library is, which routes get a companion, and how
the agent's answer goes out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mailflow.answers.review import DUPLICATE_THRESHOLD
from mailflow.direction import check_local_part
from mailflow.durations import DurationField, parse_duration
from mailflow.stage import StageOptions


class AnswersOptions(StageOptions):
    #: the library: ``<folder>/<theme>/<id>.<lang>.md``, in the rules folder
    folder: str = "answers"
    #: every answer should exist in each (a warning otherwise); default: the library's own
    languages: tuple[str, ...] = ()
    #: the language to rank in when the customer's cannot be told (None: no suggestion)
    default_language: str | None = None
    #: route -> the confidence (0 to 1) above which its agent gets a companion; a route
    #: not named here gets suggestions recorded, no companion
    companion: dict[str, float] = Field(default_factory=dict)
    #: the companion's reply address: ``<reply_local_part>+<case>.<token>@<reply_domain>``
    reply_local_part: str = "answers"
    reply_domain: str | None = None  # default: the first of local_domains
    token_valid_for: DurationField = Field(default_factory=lambda: parse_duration("30d"))
    #: who the answer to the customer is from: the service mailbox they wrote to, or the
    #: agent who sent it
    send_from: Literal["mailbox", "agent"] = "mailbox"
    from_name: str = "Service client"
    #: address (an agent's, or a team's) -> the name that signs (``agent_name``); without
    #: one, ``first.last@`` signs "First Last" and other addresses leave it missing
    agent_names: dict[str, str] = Field(default_factory=dict)
    #: web forms' senders: their ``Label: value`` lines are the ``form.*`` fields
    form_senders: tuple[str, ...] = ()
    duplicate_threshold: float = Field(DUPLICATE_THRESHOLD, gt=0, le=1)

    @field_validator("companion")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for route, threshold in value.items():
            if not 0 <= threshold <= 1:
                raise ValueError(f"route '{route}': a threshold is between 0 and 1")
        return value

    @field_validator("reply_local_part")
    @classmethod
    def _local(cls, value: str) -> str:
        return check_local_part(value)

    @field_validator("agent_names")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.strip().lower(): v for k, v in value.items()}

    @field_validator("form_senders")
    @classmethod
    def _senders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value)
