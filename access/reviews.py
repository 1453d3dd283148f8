"""Access reviews: a campaign's definition (what is in scope, who reviews it, by when, and what happens to what
nobody decided), the items a campaign snapshots, and the decisions on them.

Pure values: the definition is kept in the app DB and the organisation file (``reviews:``), a campaign and its
items in the app DB (``store.tables``), and the campaign's workflow passes only ids and counts around, never the
items (a campaign may hold 100,000).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from access.durations import Duration, format_duration, parse_duration
from access.grants import GrantPath
from access.types import Approver, Model, Sensitivity

MAX_REVIEW_NAME = 63
"""A definition's name is part of its schedule's id (``review-<name>``) and its campaigns' workflow ids."""
REVIEW_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
MIN_DEADLINE = timedelta(minutes=1)
MAX_DEADLINE = timedelta(days=366)


def _offset(value: Any) -> timedelta:
    """A duration before a deadline, where zero (``PT0S``, ``P0D``, ``0``) means "at the deadline"."""
    if value in (0, "0", "PT0S", "P0D") or value == timedelta(0):
        return timedelta(0)
    return parse_duration(value)


Offset = Annotated[
    timedelta, BeforeValidator(_offset), PlainSerializer(format_duration, return_type=str, when_used="json")
]


class DefaultDecision(StrEnum):
    """What happens, at the deadline, to an item nobody decided."""

    KEEP = "keep"
    REVOKE = "revoke"
    ESCALATE = "escalate"
    """Hand it to the fallback reviewers with a new deadline (``escalation_deadline``); kept if they do not
    decide either."""


class RevokeWhen(StrEnum):
    """When a submitted revoke is carried out."""

    AT_ONCE = "at_once"
    AT_CLOSE = "at_close"


class ReviewScope(Model):
    """Which grants a campaign holds: every condition given must hold (AND); an empty list means "any"."""

    integrations: list[str] = []
    resources: list[str] = []
    """``integration/resource``."""
    roles: list[str] = []
    """Role paths ``integration/resource/role``."""
    sensitivity: list[Sensitivity] = []
    paths: list[GrantPath] = []
    jit_longer_than: Duration | None = None
    """With ``jit`` among the paths (or no paths given): only JIT grants made for longer than this (standing
    JIT grants count as longer). Birthright and external grants are not affected by it."""
    group: str | None = None
    """Only grants of members of this group (a group reference, as policies name groups)."""
    manager: str | None = None
    """Only grants of this manager's direct reports (an email)."""


class ReviewSchedule(Model):
    """A recurring definition: a new campaign every ``every`` (a Temporal Schedule ``review-<name>``, overlap
    skip), or on a cron expression. Neither: one-off, started by hand."""

    every: Duration | None = None
    cron: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_of(self) -> ReviewSchedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a review schedule takes exactly one of `every` (a duration) and `cron`")
        return self


class ReviewDefinition(Model):
    """An access review campaign's definition (admins only, through the API, the CLI or the organisation file)."""

    name: str = Field(min_length=1, max_length=MAX_REVIEW_NAME, pattern=REVIEW_NAME_PATTERN)
    description: str = Field(default="", max_length=2000)
    scope: ReviewScope = ReviewScope()
    reviewers: list[Approver] = Field(min_length=1, max_length=10)
    """Who reviews each item: the first of these that resolves to someone other than the item's holder (the
    holder's manager, the role's owners, a group's members, a named user)."""
    fallback: list[Approver] = Field(min_length=1, max_length=10)
    """Who reviews an item when ``reviewers`` resolve to nobody (or only to its holder), and who an escalation
    goes to; never the holder either."""
    deadline: Duration = timedelta(days=14)
    reminders: list[Offset] = [timedelta(days=7), timedelta(days=3), timedelta(days=1), timedelta(0)]
    """Before the deadline: a reminder to each reviewer with undecided items, at each of these."""
    remind_managers: bool = False
    """Copy each reminder to the reviewer's manager."""
    default: DefaultDecision = DefaultDecision.KEEP
    escalation_deadline: Duration = timedelta(days=7)
    """How long the fallback reviewers have for escalated items (``default: escalate``)."""
    revoke: RevokeWhen = RevokeWhen.AT_CLOSE
    schedule: ReviewSchedule | None = None

    @field_validator("deadline", "escalation_deadline")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not MIN_DEADLINE <= value <= MAX_DEADLINE:
            raise ValueError("must be between PT1M and P366D")
        return value

    @field_validator("reminders")
    @classmethod
    def _reminders_before(cls, value: list[timedelta]) -> list[timedelta]:
        if any(r < timedelta(0) for r in value):
            raise ValueError("reminders are durations before the deadline: none may be negative")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _reminders_within(self) -> ReviewDefinition:
        if any(r >= self.deadline for r in self.reminders):
            raise ValueError("a reminder must come after the campaign starts: each must be shorter than the deadline")
        return self

    @property
    def schedule_id(self) -> str:
        return f"review-{self.name}"


class CampaignState(StrEnum):
    STARTING = "starting"
    """Taking the snapshot of its items."""
    OPEN = "open"
    ESCALATED = "escalated"
    """Past the deadline, escalated items with the fallback reviewers."""
    CLOSED = "closed"
    EMPTY = "empty"
    """Nothing was in scope: no campaign ran (recorded, so the schedule's runs are accounted for)."""


class ItemDecision(StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


class ItemState(StrEnum):
    OPEN = "open"
    """Undecided (a draft may be held)."""
    DECIDED = "decided"
    """Submitted: changeable until the campaign closes or the item is acted on."""
    DONE = "done"
    """Acted on: ``outcome`` says how."""


class ItemOutcome(StrEnum):
    KEPT = "kept"
    REVOKED = "revoked"
    """Ended through its own path (its request's workflow; removed in the target)."""
    EXCEPTION = "exception"
    """A birthright grant: its policy no longer grants it to this user (a ``BirthrightException``), and the sync
    took it away."""
    ALREADY_GONE = "already_gone"
    """The grant ended before anyone acted on it."""
    REVOKE_FAILED = "revoke_failed"
    """The revoke was refused for good (the reason is on the item); the access is still there."""


class PreviewItem(Model):
    user_email: str | None
    role: str
    path: GrantPath
    reviewer: str | None
    """None: nobody, not even the fallback, resolves for it (the definition cannot be started like this)."""


class ReviewPreview(Model):
    """What a definition would hold if started now: before it is saved or started."""

    items: int
    reviewers: int
    by_path: dict[str, int]
    to_fallback: int
    """Items whose reviewers resolve to nobody but their holder: they go to the fallback."""
    sample: list[PreviewItem]
    """The first few items."""
