"""The ``escalate:`` section: expert groups and the rules that name an expert or a group."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailflow.conditions import Condition
from mailflow.config import Model
from mailflow.direction import check_local_part
from mailflow.durations import DurationField, parse_duration
from mailflow.presence import Members
from mailflow.stage import StageOptions


class ExpertGroup(Model):
    """Experts who may each answer; presence-aware like a routing team."""

    members: Members
    #: one present member (the first, or in turn), or every present member
    strategy: Literal["first_present", "round_robin", "all"] = "first_present"

    @model_validator(mode="after")
    def _not_empty(self) -> ExpertGroup:
        if not self.members:
            raise ValueError("an expert group needs at least one member")
        return self


class EscalationCondition(Condition):
    """Route's ``when:``, plus the route the case was given (``route: [legal]``)."""

    route: tuple[str, ...] = ()

    def given(self) -> bool:
        return super().given() or bool(self.route)


class EscalationRule(Model):
    name: str
    when: EscalationCondition
    expert: str | None = None  # an address (an outside lawyer is fine)
    group: str | None = None  # a name from groups:
    remind_after: DurationField = Field(default_factory=lambda: parse_duration("1bd"))
    reminders: int = Field(2, ge=0, le=20)
    supervisor: str | None = None
    expert_answers_customer: bool = False
    advance_on_auto_reply: bool = False

    @field_validator("expert", "supervisor")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError(f"'{value}' is not an address")
        return value.strip().lower() if value is not None else None

    @model_validator(mode="after")
    def _target(self) -> EscalationRule:
        if (self.expert is None) == (self.group is None):
            raise ValueError(f"rule '{self.name}' needs exactly one of expert or group")
        return self


class EscalateOptions(StageOptions):
    #: the reply addresses are ``<reply_local_part>+<case>.<token>@<reply_domain>``
    reply_local_part: str = "experts"
    reply_domain: str | None = None  # default: the first of local_domains
    from_address: str | None = None  # default: the service mailbox the customer wrote to
    from_name: str = "Service client"
    calendar: str = "default"
    token_valid_for: DurationField = Field(default_factory=lambda: parse_duration("90d"))
    max_excerpt_chars: int = Field(4000, ge=200)
    groups: dict[str, ExpertGroup] = Field(default_factory=dict)
    rules: tuple[EscalationRule, ...] = ()

    @field_validator("reply_local_part")
    @classmethod
    def _local(cls, value: str) -> str:
        return check_local_part(value)

    def rule(self, name: str) -> EscalationRule | None:
        return next((r for r in self.rules if r.name == name), None)
