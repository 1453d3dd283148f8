"""The plain pydantic models that cross into Temporal: policy, plans, request status.

Workflows, activities and the API share these; none of them touches the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from access.durations import Duration


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
    ``access.groups``) or the user's email (``user``)."""

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
    """One approval step: ``quorum`` distinct eligible people must approve it."""

    name: str = ""
    approvers: list[Approver] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1)


class Conditions(Model):
    """When a rule applies. Every condition given must hold; none given matches everyone."""

    groups: list[str] = []
    """The requester is a member of at least one of these groups (group references, see ``access.groups``)."""
    on_call: list[str] = []
    """The requester is on call in one of these rotations (modelled as groups for now; group references)."""
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


# --- what the policy needs to know, and what it decides ----------------------------------


class Requester(Model):
    email: str
    manager: str | None = None
    """The manager's email, when the manager is an active user."""
    groups: list[str] = []
    """The policy's group references the requester is a member of (through the one group each names)."""


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


class RequestPlan(Model):
    """The outcome of policy evaluation: the rule that matched and its steps."""

    policy: str
    rule: str
    max_duration: Duration
    """The longest grant this rule allows: its ``max_duration``, or less where its condition caps it."""
    steps: list[StepPlan]
    distinct_approvers: bool = True
    """One person's decision counts for one step only (the rule's ``distinct_approvers``)."""


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
    login: str | None = None
    """The login made for this grant alone (ephemeral credentials); its requester fetches the password
    once from ``POST /api/requests/{id}/credentials``."""

    def open_round(self) -> list[StepStatus] | None:
        """The steps being decided now: the request's own while pending, a pending extension's while active."""
        if self.state is RequestState.PENDING:
            return self.steps
        if self.state is RequestState.ACTIVE and self.extensions:
            extension = self.extensions[-1]
            if extension.state is ExtensionState.PENDING:
                return extension.steps
        return None

    def open_step(self) -> StepStatus | None:
        """The step awaiting decisions now, if any."""
        return next((s for s in self.open_round() or [] if s.state is StepState.OPEN), None)

    def awaits_decision_from(self, person: str) -> bool:
        """Whether ``person`` can decide the open step now, as the workflow judges it from this status."""
        round = self.open_round() or []
        step = next((s for s in round if s.state is StepState.OPEN), None)
        if step is None or person not in step.eligible or any(d.approver == person for d in step.decisions):
            return False
        approved_another = any(
            s is not step and any(d.approver == person and d.approved for d in s.decisions) for s in round
        )
        return not (self.distinct_approvers and approved_another)


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


class AuditEntry(Model):
    actor: str
    action: str
    target: str
    reason: str = ""
    details: dict[str, Any] = {}
    at: datetime | None = None


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


# --- integrations: connection tests and discovery -----------------------------------------


class IntegrationInput(Model):
    integration: str
    """The integration's name."""


class ConnectionTestResult(Model):
    ok: bool
    detail: str
    """The target's description when ``ok``; otherwise what is wrong."""
    retryable: bool = False
    """The failure looks temporary (network, a busy server) rather than a configuration problem."""


class DriftItem(Model):
    """A grant of a JIT-only role found in the target that Lapse did not make."""

    account: str
    role: str
    user: str | None = None


class DiscoveryResult(Model):
    """What one discovery run found and changed; also kept on the integration."""

    integration: str
    resources: int = 0
    roles: int = 0
    roles_added: int = 0
    roles_missing: int = 0
    """Catalogued roles the target no longer has."""
    grants_seen: int = 0
    external_found: int = 0
    """Grants in the target that no Lapse grant covers, newly recorded with path ``external``."""
    external_gone: int = 0
    """External grants recorded earlier that the target no longer has."""
    lapse_grants_missing: int = 0
    """Active Lapse grants (jit, birthright) the target does not have: removed by hand outside Lapse."""
    birthright_ended: int = 0
    """Of those, birthright grants ended here: the birthright sync (started at once) grants them again."""
    unlinked_accounts: int = 0
    """Accounts holding a role that match no Lapse user."""
    drift: list[DriftItem] = []
    """External grants of JIT-only roles to revoke (the integration enforces JIT-only)."""
    remediated: int = 0


class RemediateInput(Model):
    integration: str
    items: list[DriftItem]


# --- scheduled syncs: directory and birthright --------------------------------------------


class SyncInput(Model):
    """What started a sync run: the schedule, or a trigger (a policy change, a directory change)."""

    reason: str = "schedule"


class BirthrightSyncInput(SyncInput):
    """A birthright sync run; ``run`` and ``after_seq`` are set when it continues as new mid-apply."""

    run: str | None = None
    """The plan being applied (its items are in the app DB); None: plan first."""
    after_seq: int = 0
    """Items up to this sequence number are done."""


class BirthrightPlanned(Model):
    """What the plan activity stored: the run id and counts, never the items (there may be 100,000s)."""

    run: str
    add: int
    remove: int
    relabel: int
    frozen_roles: list[str] = []


class BirthrightBatchInput(Model):
    run: str
    after_seq: int
    limit: int


class BirthrightBatchResult(Model):
    last_seq: int | None
    """The highest sequence number handled; None when nothing was left after ``after_seq``."""
    more: bool = False
    """The batch was full: there may be items after ``last_seq``."""
    applied: int = 0
    failed: int = 0


class BirthrightFinishInput(Model):
    run: str | None
    error: str | None = None
    """Why the run could not complete (the plan or an apply batch failed)."""


class BirthrightSyncResult(Model):
    run: str | None
    added: int = 0
    removed: int = 0
    relabelled: int = 0
    failed: int = 0
    error: str | None = None


# --- the directory sync: joiners, movers, leavers ------------------------------------------


class Joiner(Model):
    """A user the directory sync added, or made active again."""

    email: str
    name: str = ""
    manager: str | None = None
    groups: list[str] = []


class Mover(Model):
    """A user whose groups (those the source manages) changed."""

    email: str
    added: list[str] = []
    removed: list[str] = []


class Leaver(Model):
    """A user the directory sync made inactive: disabled in their source, or gone from it."""

    email: str
    why: str
    """``disabled in <source>`` or ``gone from <source>``."""


class RequestToEnd(Model):
    """An open request of a user who is no longer active: cancelled while pending, revoked once granted."""

    id: str
    requester: str
    state: str
    """The state the app DB last saw; the workflow decides from its own."""


class ApprovalToReresolve(Model):
    """An open request whose open step names approvers who are no longer active."""

    id: str
    left: list[str]


class LeaverWork(Model):
    """What the directory sync asks request workflows to do about people who are no longer active."""

    end: list[RequestToEnd] = []
    reresolve: list[ApprovalToReresolve] = []
    more: bool = False
    """There was more than one run takes on; the next run finds the rest."""


class DirectorySyncResult(Model):
    """What one directory sync found and changed (the lists are capped; the counts are not)."""

    sources: list[str] = []
    """``file`` or the directory integrations' names."""
    users: int = 0
    """Users the sources reported."""
    groups: int = 0
    joined: int = 0
    moved: int = 0
    left: int = 0
    joiners: list[Joiner] = []
    movers: list[Mover] = []
    leavers: list[Leaver] = []
    groups_changed: bool = False
    """A group was added or emptied, or a membership changed: birthright grants may follow."""
    work: LeaverWork = LeaverWork()


class DirectorySyncInput(SyncInput):
    """The schedule starts a run with a plain ``SyncInput``; a run that continues as new passes on its work."""

    work: LeaverWork | None = None
    """Requests still to signal: the run skips the sync and carries on with these."""


class ReresolveInput(Model):
    left: list[str] = []
    """The approvers who left, named in the reason if the step can no longer be decided."""


class TriggerInput(Model):
    schedule_id: str
    """The sync to run now: ``birthright-sync`` or ``directory-sync``."""


# --- an admin's revoke of a birthright or external grant ----------------------------------


class LedgerRevokeInput(Model):
    grant_id: int
    actor: str
    comment: str = ""


class LedgerRevokeResult(Model):
    role: str
    account: str
    path: str
    still_held: bool
    """Another active grant still covers the account and role, so access stays."""
    returns_on_sync: bool
    """A birthright grant: the next birthright sync grants it again while its policy applies."""


# --- the expiry backstop ------------------------------------------------------------------


class BackstopInput(Model):
    """A run of the expiry backstop; ``after_id`` and ``rounds`` are set when it continues as new."""

    grace: timedelta = timedelta(minutes=2)
    """How long past its end a grant may stay before the backstop steps in."""
    after_id: int = 0
    """Grants up to this id were looked at by an earlier round of this run."""
    rounds: int = 0


class FindOverdueInput(Model):
    grace: timedelta
    after_id: int
    limit: int


class OverdueGrant(Model):
    """A JIT grant past its end (or stuck mid-grant or mid-revoke) whose request run will not revoke it."""

    grant_id: int
    request_id: str
    reason: str
    """Why its run will not: gone, ended, or alive but holding the grant past its end."""


class OverdueFound(Model):
    grants: list[OverdueGrant] = []
    last_id: int | None = None
    """The last grant id looked at; None when there was none."""
    more: bool = False
    """More grants may be overdue beyond ``last_id``."""


class BackstopResult(Model):
    """What one backstop run did: counts, and the request ids whose revoke is failing (at most a few)."""

    revoked: int = 0
    still_held: int = 0
    """Ended in the ledger, but another active grant still covers the account and role."""
    failing: list[str] = []
    rounds: int = 0
    error: str | None = None
