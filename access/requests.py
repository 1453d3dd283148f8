"""A request as its workflow knows it: states, steps, status, and the inputs and results of its
messages and activities."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from access.durations import Duration
from access.types import Approver, AuditEntry, BreakGlassPlan, Model, RequestPlan

# --- a request as the workflow knows it --------------------------------------------------


class RequestState(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    REVOKING = "revoking"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = {
    RequestState.EXPIRED,
    RequestState.REVOKED,
    RequestState.DENIED,
    RequestState.CANCELLED,
    RequestState.TIMED_OUT,
    RequestState.FAILED,
}


class StepState(StrEnum):
    WAITING = "waiting"
    OPEN = "open"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class Decision(Model):
    approver: str
    approved: bool
    comment: str = ""
    at: datetime


class StepStatus(Model):
    name: str
    approvers: list[Approver]
    quorum: int
    eligible: list[str]
    decisions: list[Decision] = []
    state: StepState = StepState.WAITING
    opened_at: datetime | None = None
    remind_after: Duration | None = None
    remind_every: Duration | None = None
    escalate_after: Duration | None = None
    escalate_to: list[Approver] = []
    """The step's reminders and escalation, as its plan said (``access.types.Step``)."""
    reminders: int = 0
    """Reminders sent so far."""
    next_reminder_at: datetime | None = None
    """When the next reminder goes out, while the step is open and one is due."""
    escalate_at: datetime | None = None
    """When the step escalates (or escalated) to ``escalate_to``, once it is open."""
    escalated_at: datetime | None = None
    """When it did: from then on ``escalate_to``'s people are among ``eligible``."""

    @property
    def approvals(self) -> int:
        return sum(1 for decision in self.decisions if decision.approved)


class ExtensionState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    LAPSED = "lapsed"
    """The grant ended before the extension was decided."""


class ExtensionStatus(Model):
    duration: Duration
    justification: str
    requested_at: datetime
    rule: str
    state: ExtensionState = ExtensionState.PENDING
    steps: list[StepStatus] = []


class RequestStatus(Model):
    """The whole picture of one request: what the ``status`` query and the API return."""

    id: str
    requester: str
    role: str
    duration: Duration
    justification: str
    policy: str
    rule: str
    state: RequestState = RequestState.PENDING
    created_at: datetime
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    steps: list[StepStatus] = []
    extensions: list[ExtensionStatus] = []
    revoke_error: str | None = None
    """Set while a revoke keeps failing; Lapse keeps retrying until it succeeds."""
    distinct_approvers: bool = True
    """One person's decision counts for one step of a round only."""
    reauthenticate_within: Duration | None = None
    """Its workflow's ``reauthenticate_within`` when it started: approving it or an extension, asking for an
    extension, and ending it for someone else need a sign-in at most this long ago (None: any sign-in)."""
    login: str | None = None
    """The login made for this grant alone (ephemeral credentials); its requester fetches the password
    once from ``POST /api/requests/{id}/credentials``."""
    warned_for: datetime | None = None
    """The end its holder was last warned of (``grant.expiring_soon``): an extension that moves the end warns
    again before the new one."""
    break_glass: BreakGlassPlan | None = None
    """An emergency request's review plan (granted at once, reviewed afterwards: ``access.break_glass``)."""

    def open_step(self) -> StepStatus | None:
        """The step awaiting decisions now, if any (the round's rules are in ``access.approval``)."""
        from access.approval import ApprovalRound  # which builds on the models here

        round = ApprovalRound.of(self)
        return round.open_step if round else None

    def awaits_decision_from(self, person: str) -> bool:
        """Whether ``person`` can decide the open step now, as the workflow judges it from this status."""
        from access.approval import ApprovalRound

        round = ApprovalRound.of(self)
        return round is not None and round.refusal(person, distinct=self.distinct_approvers) is None


# --- workflow and activity inputs ---------------------------------------------------------


class Resume(Model):
    """What a request's run hands the run it continues as (a long hold or a long-failing revoke)."""

    status: RequestStatus
    enforced_end: datetime | None = None
    """The grant's end as last passed to the target."""
    ending: EndInput | None = None
    """A revoke (or a leaver's end) already asked for."""
    revoking: bool = False
    """The grant's time is up or it is being ended: go straight to the revoke."""
    failure: str = ""
    """Why provisioning failed, when the revoke being carried on takes back a failed grant."""
    record_seq: int = 0
    """Bookkeeping steps written so far (``RecordInput.seq``)."""


class AccessRequestInput(Model):
    id: str
    requester: str
    role: str
    duration: Duration
    justification: str
    plan: RequestPlan
    approval_timeout: Duration
    created_at: datetime
    resume: Resume | None = None
    """Set when the run continues as new: the approval round is over and the grant was made."""
    expiry_warning: Duration | None = None
    """The lead time of the expiring-soon warning in runs that timed it themselves (started before the scan of
    the grants ledger warned, ``store.expiry_warnings``); new requests leave it None."""


class RequestAck(Model):
    """What an update answers: small, since every answer is kept in the run's history."""

    id: str
    state: RequestState
    expires_at: datetime | None = None


class DecisionInput(Model):
    actor: str
    comment: str = ""
    request_id: str | None = None
    """The request this decision is for: the workflow refuses one made for another (a sealed payload
    replayed from one request into another). None only in histories from before this field."""


class EndInput(Model):
    """Cancel (while pending) or revoke (once granted)."""

    actor: str
    is_admin: bool = False
    condemned: bool = False
    """A reviewer of an emergency grant condemned it: the workflow lets them revoke it if its plan names them."""
    comment: str = ""
    request_id: str | None = None
    """The request this is for (see ``DecisionInput.request_id``)."""


class ExtendInput(Model):
    request_id: str | None = None
    """The request this is for (see ``DecisionInput.request_id``)."""
    actor: str
    duration: Duration
    justification: str = ""
    plan: RequestPlan
    """The policy's verdict on the grant's new total length, evaluated by the caller."""
    total: Duration | None = None
    """The new total length the plan was judged for; the workflow refuses the extension if the grant
    changed meanwhile (another extension applied), since the verdict may not hold for another total."""


class RecordInput(Model):
    status: RequestStatus
    events: list[AuditEntry] = []
    seq: int | None = None
    """The workflow's count of bookkeeping steps, carried across continue-as-new: a step already written
    is skipped (None: runs from before this count, written every time)."""


class ResolveInput(Model):
    requester: str
    role: str
    approvers: list[Approver]


class GrantInput(Model):
    request_id: str
    requester: str
    role: str
    duration: Duration | None = None
    """How long the grant lasts from the moment it is made; None for standing access."""
    expires_at: datetime | None = None
    """Set when an extension moved the end of a grant already made: only that end is passed on."""


class GrantResult(Model):
    account: str
    granted_at: datetime
    expires_at: datetime | None = None
    shared: bool
    """Another active grant already covered this account and role: no new provision."""
    credentials: bool = False
    """A login with a password was made for this grant; the password itself is sealed in the app DB,
    never here (this result is kept in workflow history)."""


class CredentialsShown(Model):
    """An ephemeral grant's login, as shown once to its requester (never stored in this form)."""

    username: str
    password: str
    expires_at: datetime | None
    """When the target stops accepting the login (it moves with extensions)."""
    dsn_hint: str | None = None
    """Where to connect, without the password."""


class RevokeInput(Model):
    request_id: str
    requester: str
    role: str


class RevokeResult(Model):
    revoked_at: datetime
    still_held: bool
    """Another active grant still covers this account and role, so access stays."""
