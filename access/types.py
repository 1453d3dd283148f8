"""The base model and the approval policy's models: rules, steps, approvers, plans; audit entries.

Workflows, activities and the API share these; none of them touches the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from access.durations import Duration, format_duration
from access.limits import MAX_REAUTHENTICATE, MIN_REAUTHENTICATE, MIN_REMIND_EVERY


class Model(BaseModel):
    """Base for Lapse's value types: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- approval policy --------------------------------------------------------------------


class Sensitivity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ApproverKind(StrEnum):
    MANAGER = "manager"
    """The requester's direct manager."""
    RESOURCE_OWNER = "resource_owner"
    """The owners of the requested role."""
    GROUP = "group"
    """Any member of the named group."""
    USER = "user"
    """The named user."""


class Approver(Model):
    """Who may approve a step, by abstract type; resolved to people when the step opens."""

    kind: ApproverKind
    name: str | None = None
    """A group reference (``group``: ``name``, ``source:name`` or ``source:#external-id``, see
    ``store.groups``) or the user's email (``user``)."""

    @model_validator(mode="after")
    def _name_matches_kind(self) -> Approver:
        needs_name = self.kind in (ApproverKind.GROUP, ApproverKind.USER)
        if needs_name and not self.name:
            raise ValueError(f"approver of kind {self.kind.value!r} needs a name")
        if not needs_name and self.name:
            raise ValueError(f"approver of kind {self.kind.value!r} takes no name")
        if self.kind is ApproverKind.USER and self.name:
            self.name = self.name.strip().lower()  # emails compare case-insensitively, as users are stored
        return self

    def describe(self) -> str:
        return f"{self.kind.value}:{self.name}" if self.name else self.kind.value


class Step(Model):
    """One approval step: ``quorum`` distinct eligible people must approve it.

    While it waits, its approvers can be reminded (``remind_after``, then every ``remind_every``) and, after
    ``escalate_after``, the people ``escalate_to`` names may decide it too. The request's approval timeout
    still ends it as ``timed_out``."""

    name: str = ""
    approvers: list[Approver] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1)
    remind_after: Duration | None = None
    """Remind the approvers this long after the step opens (``PT1H``); None: no first reminder of its own
    (``remind_every`` alone reminds first after ``remind_every``)."""
    remind_every: Duration | None = None
    """Then remind them again this often, at least ``MIN_REMIND_EVERY`` apart, until the step is decided."""
    escalate_after: Duration | None = None
    """This long after the step opens, the people ``escalate_to`` names may decide it too."""
    escalate_to: list[Approver] = Field(default=[], max_length=50)
    """The fallback approvers (a manager, a named group, a user); never the requester."""

    @model_validator(mode="after")
    def _timers(self) -> Step:
        if self.remind_every is not None and self.remind_every < MIN_REMIND_EVERY:
            raise ValueError(
                f"remind_every is {format_duration(self.remind_every)}: reminders must be at least "
                f"{format_duration(MIN_REMIND_EVERY)} apart"
            )
        if self.escalate_after is not None and not self.escalate_to:
            raise ValueError("escalate_after needs escalate_to: the approvers the step escalates to")
        if self.escalate_to and self.escalate_after is None:
            raise ValueError("escalate_to needs escalate_after: how long the step waits before it escalates")
        return self


class Conditions(Model):
    """When a rule applies. Every condition given must hold; none given matches everyone."""

    groups: list[str] = []
    """The requester is a member of at least one of these groups (group references, see ``store.groups``)."""
    on_call: list[str] = []
    """The requester is on call now in one of these rotations: ``pagerduty:<schedule id>``,
    ``pagerduty:service:<service id>`` (its escalation policy's first level), ``opsgenie:<schedule name>``, or
    a group reference (a rotation kept as a group). See ``access.on_call``."""
    duration_at_most: Duration | None = None
    """The requested duration is at most this long."""


class Rule(Model):
    name: str
    when: Conditions = Conditions()
    steps: list[Step] = []
    """Approval steps, opened in order; none means the request is granted at once."""
    max_duration: Duration
    justification: bool = True
    """Whether a request under this rule must give a justification."""
    distinct_approvers: bool = True
    """One person's decision counts for one step of a request only; ``false`` lets the same person
    approve several steps (say so explicitly: it weakens a multi-step rule to fewer people)."""

    @model_validator(mode="after")
    def _positive_max(self) -> Rule:
        if self.max_duration <= timedelta(0):
            raise ValueError(f"rule {self.name!r}: max_duration must be longer than zero")
        return self


class ApprovalPolicy(Model):
    """An approval workflow: ordered rules, evaluated top to bottom; the first match wins."""

    name: str
    description: str = ""
    rules: list[Rule] = Field(min_length=1)
    reauthenticate_within: Duration | None = None
    """Approving, extending or revoking a request under this workflow needs a sign-in at the identity provider
    at most this long ago (``PT10M``): an older browser session is sent back to sign in again (``max_age``).
    None: any signed-in caller may. Between ``MIN_REAUTHENTICATE`` and ``MAX_REAUTHENTICATE``."""

    @field_validator("reauthenticate_within")
    @classmethod
    def _reauthenticate_bounded(cls, window: timedelta | None) -> timedelta | None:
        if window is not None and not MIN_REAUTHENTICATE <= window <= MAX_REAUTHENTICATE:
            raise ValueError(
                f"{format_duration(window)} is out of bounds: reauthenticate_within must be between "
                f"{format_duration(MIN_REAUTHENTICATE)} and {format_duration(MAX_REAUTHENTICATE)}"
            )
        return window


# --- what the policy needs to know, and what it decides ----------------------------------


class Requester(Model):
    email: str
    manager: str | None = None
    """The manager's email, when the manager is an active user."""
    groups: list[str] = []
    """The policy's group references the requester is a member of (through the one group each names)."""
    on_call: list[str] = []
    """The policy's on-call provider references (``pagerduty:…``, ``opsgenie:…``) the requester is on call for
    now, read from the provider before evaluation (``activities.oncall``); one it could not read is not here."""


class RoleFacts(Model):
    path: str
    """``integration/resource/role``."""
    owners: list[str] = []
    sensitivity: Sensitivity = Sensitivity.MEDIUM


class PolicyContext(Model):
    """The slice of the organisation a policy decision reads, taken from the app DB."""

    requester: Requester
    role: RoleFacts
    group_members: dict[str, list[str]] = {}
    """Active members of every group the policy's approvers name, by reference (none when it names no
    single group)."""
    inactive: list[str] = []
    """Users the policy's approvers name (``user``) who are no longer active: they approve nothing."""


class StepPlan(Model):
    name: str
    approvers: list[Approver]
    quorum: int
    eligible: list[str]
    """Who could decide this step when the plan was made (never the requester)."""
    remind_after: Duration | None = None
    remind_every: Duration | None = None
    escalate_after: Duration | None = None
    escalate_to: list[Approver] = []
    """The step's reminders and escalation, as its rule says (``Step``)."""


class RequestPlan(Model):
    """The outcome of policy evaluation: the rule that matched and its steps."""

    policy: str
    rule: str
    max_duration: Duration
    """The longest grant this rule allows: its ``max_duration``, or less where its condition caps it."""
    steps: list[StepPlan]
    distinct_approvers: bool = True
    """One person's decision counts for one step only (the rule's ``distinct_approvers``)."""
    reauthenticate_within: Duration | None = None
    """The workflow's ``reauthenticate_within``: deciding, extending or revoking needs a sign-in this recent."""
    break_glass: BreakGlassPlan | None = None
    """Set for an emergency request (rule ``break-glass``): granted at once, reviewed afterwards."""
    on_call: list[str] = []
    """The rule's ``when.on_call`` references the requester met (on call now, or in the group): why it applied."""


class BreakGlass(Model):
    """A role's emergency access: its holder may be granted it at once, without approval, for a short, capped time,
    and the grant is reviewed afterwards (``access.break_glass``)."""

    max_duration: Duration = timedelta(hours=1)
    """The longest emergency grant; a longer ask is refused, naming this cap."""
    review_within: Duration = timedelta(hours=24)
    """How long the skipped approvers have to confirm or condemn it; unreviewed after that, it is escalated."""
    notify: list[str] | None = Field(default=None, max_length=50)
    """Group references told loudly at once (and when it is condemned or goes unreviewed); None: the group
    ``security``, if there is one."""

    @model_validator(mode="after")
    def _positive(self) -> BreakGlass:
        if self.max_duration <= timedelta(0) or self.review_within <= timedelta(0):
            raise ValueError("break_glass: max_duration and review_within must be longer than zero")
        return self


class BreakGlassPlan(Model):
    """What an emergency request's plan adds: who reviews it afterwards, who is told, and by when."""

    reviewers: list[str]
    """The people the role's normal rule would have asked to approve (the skipped approvers), never the requester;
    an admin may decide too."""
    notify: list[str]
    """The members of the role's ``notify`` groups when the request was made."""
    review_within: Duration
    """The review's deadline, counted from the grant."""
    skipped_rule: str
    """The rule that would have applied without the emergency."""


class AuditEntry(Model):
    actor: str
    action: str
    target: str
    reason: str = ""
    details: dict[str, Any] = {}
    at: datetime | None = None
