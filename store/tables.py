"""The app DB: Lapse's queryable projection of the organisation, requests, grants and audit.

Workflows never import this module; activities and the API do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from access.grants import GrantPath


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the app DB; Lapse stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(*, nullable: bool = True, index: bool = False) -> Any:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)
    name: str = ""
    manager_email: str | None = None
    department: str | None = None
    """The department the identity source names (the organisation file's ``department:``, the directory's
    ``department`` attribute); shown to reviewers beside the manager."""
    active: bool = True
    is_admin: bool = False
    source: str = "file"
    """Where the user comes from: ``file`` (the organisation file) or the directory integration's name.
    A directory sync only deactivates (as leavers) the users of its own source."""
    external_id: str | None = None
    """The directory entry the user is (its entryUUID / objectGUID, else its DN); None for the file's users.
    Another entry of the same source claiming the same email does not take the user over."""
    kind: str = Field(default="person", sa_column_kwargs={"server_default": "person"})
    """``person``, or ``service``: a service account an admin made for a script; it holds API tokens and never
    signs in (neither through OIDC nor through a proxy's header)."""

    @property
    def is_service(self) -> bool:
        return self.kind == SERVICE_ACCOUNT


SERVICE_ACCOUNT = "service"
"""``User.kind`` of a service account."""


class Group(SQLModel, table=True):
    """A group of one source: the organisation file's (``file``, keyed by name) or a directory's (the
    integration's name, keyed by the entry's entryUUID / objectGUID, else its DN). Two sources' groups of
    the same name are different groups; policies name them by reference (``store.groups``)."""

    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_group_source_external_id"),
        Index(
            "uq_group_file_name",
            "name",
            unique=True,
            sqlite_where=text("source = 'file'"),
            postgresql_where=text("source = 'file'"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    """The display name (an LDAP group's ``cn``); unique only within the organisation file."""
    description: str = ""
    source: str = "file"
    external_id: str | None = None
    """The group's identity in its source: the name for the file's groups."""


class Membership(SQLModel, table=True):
    user_id: int = Field(foreign_key="user.id", primary_key=True)
    group_id: int = Field(foreign_key="group.id", primary_key=True)


class Integration(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    kind: str = "ledger"
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Connector settings: secrets only as references (an env var or a file), never the value."""
    discovery_interval_s: int = 900
    """How often the discovery schedule runs."""
    enforce_jit_only: bool = False
    """Revoke grants of JIT-only roles that discovery finds were made outside Lapse."""
    discovered_at: datetime | None = Field(default=None, sa_column=_utc())
    discovery_error: str | None = None
    """Why the last discovery failed; cleared by the next one that succeeds."""
    discovery_summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    directory: bool = False
    """Also the identity source: the directory sync reads users, groups and memberships from it (LDAP)."""


class Resource(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("integration_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id", index=True)
    name: str
    description: str = ""


class Role(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("resource_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(foreign_key="resource.id", index=True)
    name: str
    path: str = Field(unique=True, index=True)
    """``integration/resource/role``, kept denormalised because everything refers to it."""
    description: str = ""
    sensitivity: str = "medium"
    jit_only: bool = False
    """Only Lapse may grant it: a grant found in the target is drift (and revoked where enforced)."""
    missing: bool = False
    """The last discovery did not find the role in the target."""
    break_glass: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """Its emergency access (an ``access.types.BreakGlass`` as JSON), or None: it cannot be asked for so."""


class RoleOwner(SQLModel, table=True):
    role_id: int = Field(foreign_key="role.id", primary_key=True)
    user_id: int = Field(foreign_key="user.id", primary_key=True)


class ApprovalWorkflow(SQLModel, table=True):
    """An approval policy; its rules are an ``access.types.ApprovalPolicy`` stored as JSON."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    description: str = ""
    rules: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reauthenticate_seconds: int | None = None
    """Its ``reauthenticate_within``, in seconds (None: deciding needs no recent sign-in)."""


class ApprovalAssignment(SQLModel, table=True):
    """Assigns an approval workflow to an integration, a resource or a role (most specific wins)."""

    __table_args__ = (UniqueConstraint("integration_id", "resource_id", "role_id"),)
    id: int | None = Field(default=None, primary_key=True)
    approval_workflow_id: int = Field(foreign_key="approvalworkflow.id")
    integration_id: int = Field(foreign_key="integration.id", index=True)
    resource_id: int | None = Field(default=None, foreign_key="resource.id")
    role_id: int | None = Field(default=None, foreign_key="role.id")


class AccessRequest(SQLModel, table=True):
    """A request's latest known status, written by the workflow's bookkeeping activity."""

    __table_args__ = (Index("ix_request_requester_state", "requester", "state"),)
    id: str = Field(primary_key=True)
    requester: str = Field(index=True)
    role: str = Field(index=True)
    state: str = Field(index=True)
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    ended_at: datetime | None = Field(default=None, sa_column=_utc())
    status: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The whole ``RequestStatus`` as the workflow last recorded it."""
    recorded_seq: int = 0
    """The last bookkeeping step of the workflow written here: a step replayed after a worker died
    between its commit and the workflow task's completion is not written (nor audited) twice."""


class ApprovalInbox(SQLModel, table=True):
    """Who may decide a request now: one row per open decision (the request's open step, or its pending
    extension's) and person who may make it, kept in step with ``AccessRequest.status`` in the same
    transaction (``store.approval_inbox``), so an approver's list is an index range, not a scan."""

    __table_args__ = (Index("ix_approvalinbox_approver_order", "approver", "created_at", "request_id"),)
    request_id: str = Field(primary_key=True)
    approver: str = Field(primary_key=True)
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    """The request's ``created_at``: an inbox lists its requests oldest first, as the requests were made."""


class RequestStep(SQLModel, table=True):
    """A bookkeeping step of a request's workflow that is written: a step replayed after a worker died
    between its commit and its workflow task's completion finds itself here and writes nothing twice."""

    request_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)


HELD: dict[str, Any] = {"sqlite_where": text("active IS NOT 0"), "postgresql_where": text("active")}
"""An index over active grants only. A query uses one when it says the same: ``col(Grant.active)`` on PostgreSQL,
``col(Grant.active).is_not(False)`` on SQLite (where, unlike ``active = 1``, no index on ``active`` takes it for a
selective equality)."""
ENDING: dict[str, Any] = {
    "sqlite_where": text("active IS NOT 0 AND expires_at IS NOT NULL"),
    "postgresql_where": text("active AND expires_at IS NOT NULL"),
}
"""An index over the active grants that end: a query says both terms (``store.grant_pages``)."""
GRANT_SORT_KEYS = ("granted_at", "expires_at", "user_email", "role")
"""What the permissions table sorts grants by (then by id)."""
ENDING_SORT_KEYS = ("granted_at", "user_email", "role")


class Grant(SQLModel, table=True):
    """The grants ledger: one row per grant of a role to an account, by whatever path."""

    __table_args__ = (
        Index("ix_grant_account_role_active", "account", "role", "active"),
        Index("ix_grant_active_expires_at", "active", "expires_at"),
        # The permissions table (migration 0011, store/grant_pages.py), over active grants only: each sort key
        # with the id that breaks its ties, alone, after the path and after the role and path, so that a page
        # under any filters is one index range. Partial: ended grants cost nothing, and no planner takes
        # "active" for a selective column.
        *(Index(f"ix_grant_held_{key}", key, "id", **HELD) for key in GRANT_SORT_KEYS),
        *(Index(f"ix_grant_held_path_{key}", "path", key, "id", **HELD) for key in GRANT_SORT_KEYS),
        *(Index(f"ix_grant_held_role_path_{key}", "role", "path", key, "id", **HELD) for key in GRANT_SORT_KEYS[:3]),
        Index("ix_grant_held_role_path", "role", "path", "id", **HELD),
        # "Expiring before" under another order: walked over the grants that end at all, the end read in the index.
        *(Index(f"ix_grant_ending_{key}", key, "id", "expires_at", **ENDING) for key in ENDING_SORT_KEYS),
    )
    id: int | None = Field(default=None, primary_key=True)
    account: str
    role: str
    user_email: str | None = Field(default=None, index=True)
    path: str = GrantPath.JIT
    """How it came to be: a ``GrantPath`` value (``jit``, ``birthright`` or ``external``)."""
    request_id: str | None = Field(default=None, unique=True)
    policy: str | None = Field(default=None, index=True)
    """The birthright policy a ``birthright`` grant was made under."""
    active: bool = True
    granted_at: datetime = Field(sa_column=_utc(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    ended_at: datetime | None = Field(default=None, sa_column=_utc())
    phase: str = Field(default="held", sa_column_kwargs={"server_default": "held"})
    """While active: ``provisioning`` (the target is being granted), ``held`` or ``revoking`` (the target is
    being revoked). No target is called inside a transaction: see ``store.ledger``."""
    phase_at: datetime | None = Field(default=None, sa_column=_utc())
    """When the grant entered its phase; the expiry backstop looks at grants stuck in one."""
    last_used_at: datetime | None = Field(default=None, sa_column=_utc())
    """When discovery last saw the access in use, where its connector can tell (a PostgreSQL login with a live
    session, AD's ``lastLogonTimestamp``); None: unknown. Reviewers see it."""
    warned_for: datetime | None = Field(default=None, sa_column=_utc())
    """The end its holder was last warned of (``grant.expiring_soon``, ``store.expiry_warnings``): an extension
    that moves the end warns again before the new one."""


class Credential(SQLModel, table=True):
    """The one-time login of an ephemeral grant, its password sealed until the requester fetches it."""

    request_id: str = Field(primary_key=True)
    username: str
    ciphertext: str | None = None
    """The password, sealed with the app's key (``store.credentials``); cleared once shown."""
    dsn_hint: str | None = None
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    shown_at: datetime | None = Field(default=None, sa_column=_utc())


class AuditEvent(SQLModel, table=True):
    """An append-only, MAC-chained log: ``id`` is the sequence number; each row's ``hash`` is an HMAC
    (key ``key_id``, kept outside the DB) over its content and the previous row's ``hash``."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_utc(nullable=False, index=True))
    actor: str = Field(index=True)
    action: str = Field(index=True)
    target: str = Field(index=True)
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = ""
    hash: str = ""
    key_id: str = Field(default="", sa_column_kwargs={"server_default": ""})
    """The audit key the MAC was made with; ``""`` for events from before migration 0005 (unkeyed SHA-256)."""


class BirthrightPolicy(SQLModel, table=True):
    """Baseline access: members of any of ``groups`` hold every role in ``roles``. Ordered by ``position``;
    a user and role granted by several policies is attributed to the first."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    position: int = Field(index=True)
    description: str = ""
    groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Role paths ``integration/resource/role``."""


class BirthrightItem(SQLModel, table=True):
    """One step of a birthright sync's plan, kept in the app DB so a run of any size resumes where it was."""

    __table_args__ = (Index("ix_birthright_item_run_seq", "run", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    run: str
    seq: int
    action: str
    """``add``, ``remove`` or ``relabel`` (another policy now accounts for the grant)."""
    user_email: str
    role: str
    policy: str
    done: bool = False
    """Applied, or given up on (``error`` says why); a resumed run skips it."""
    error: str | None = None
    """Why the target refused it for good; the next sync plans it again."""


class SyncState(SQLModel, table=True):
    """How the last run of a scheduled sync (``directory-sync``, ``birthright-sync``) went."""

    name: str = Field(primary_key=True)
    started_at: datetime | None = Field(default=None, sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=_utc())
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = None


class WebSession(SQLModel, table=True):
    """A browser's sign-in. The cookie holds a random id; the app DB only its SHA-256, so a copy of the DB
    signs nobody in. Ends when signed out (``ended_at``), idle too long, or too old (``store.settings``)."""

    id: str = Field(primary_key=True)
    """The SHA-256 (hex) of the session id in the cookie, never the id itself."""
    email: str = Field(index=True)
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    last_seen_at: datetime = Field(sa_column=_utc(nullable=False))
    """The last request made with it, to the minute (it is written at most once a minute)."""
    auth_time: datetime | None = Field(default=None, sa_column=_utc())
    """When the identity provider last authenticated the user (OIDC ``auth_time``), for decisions that need a
    recent sign-in; None when its ID token did not say (never taken to be the sign-in's own time)."""
    csrf_token: str
    """What the session's forms and scripts send back with each change (``starter/api/security.py``)."""
    ended_at: datetime | None = Field(default=None, sa_column=_utc())


class ApiToken(SQLModel, table=True):
    """A personal or service account's API token. The caller saw it once; the app DB holds only its SHA-256."""

    id: str = Field(primary_key=True)
    """A public id, to list and revoke it by (not a secret)."""
    owner: str = Field(index=True)
    """The email of the user (or service account) it acts as; it never does more than they may."""
    name: str
    hash: str = Field(unique=True)
    """The SHA-256 (hex) of the token, never the token itself."""
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Of ``read``, ``request``, ``approve``, ``admin``."""
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    created_by: str
    """Who made it: its owner, or the admin who made a service account's."""
    expires_at: datetime = Field(sa_column=_utc(nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=_utc())
    """The last call made with it, to the minute."""
    revoked_at: datetime | None = Field(default=None, sa_column=_utc())


class DeviceSignIn(SQLModel, table=True):
    """A ``lapse login`` waiting for its person to approve it in a browser (RFC 8628's device flow, hosted by
    Lapse: ``starter/services/device.py``). Neither code is kept: a copy of the app DB approves nothing and
    exchanges nothing."""

    id: str = Field(primary_key=True)
    """A public id, for the audit log (not a secret)."""
    device_hash: str = Field(unique=True)
    """The SHA-256 (hex) of the device code the CLI polls with, never the code itself."""
    user_hash: str = Field(unique=True)
    """An HMAC of the user code the person types (a key derived from Lapse's secret key: the code is short)."""
    client_name: str
    """What the CLI says it runs on (its host name), shown to the person approving."""
    address: str
    """The address the sign-in was asked from, as the API saw it."""
    created_at: datetime = Field(sa_column=_utc(nullable=False, index=True))
    expires_at: datetime = Field(sa_column=_utc(nullable=False))
    interval: int
    """Seconds the CLI must wait between polls; polling faster is answered ``slow_down`` and adds 5."""
    polled_at: datetime | None = Field(default=None, sa_column=_utc())
    state: str = "pending"
    """``pending``, ``approved``, ``denied`` or ``used`` (a token was issued: never a second)."""
    decided_by: str | None = None
    """The person who approved or denied it; the token is theirs."""
    decided_at: datetime | None = Field(default=None, sa_column=_utc())
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """The scopes its token gets, fixed when it is approved."""
    token_id: str | None = None
    """The token issued for it (its public id)."""


# --- access reviews (``access.reviews``) -------------------------------------------------------


class ReviewDefinitionRow(SQLModel, table=True):
    """A review campaign's definition, as ``access.reviews.ReviewDefinition`` in ``body``."""

    __tablename__ = "reviewdefinition"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    source: str = "api"
    """``api`` (the API or the CLI) or ``file`` (the organisation file's ``reviews:``)."""
    updated_by: str = ""
    updated_at: datetime = Field(sa_column=_utc(nullable=False))


class ReviewCampaign(SQLModel, table=True):
    """One run of a definition: its items were snapshotted when it started and do not move after."""

    id: str = Field(primary_key=True)
    """``<definition>-<UTC start, YYYYMMDDTHHMMSS>``; its workflow's id is ``names.review_workflow_id(id)``."""
    definition: str = Field(index=True)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The definition as it was when the campaign started."""
    state: str = Field(default="starting", index=True)
    """An ``access.reviews.CampaignState``."""
    started_by: str
    """Who started it, or ``schedule``."""
    started_at: datetime = Field(sa_column=_utc(nullable=False))
    deadline: datetime = Field(sa_column=_utc(nullable=False))
    escalation_deadline: datetime | None = Field(default=None, sa_column=_utc())
    closed_at: datetime | None = Field(default=None, sa_column=_utc())
    closed_by: str | None = None
    items: int = 0
    reviewers: int = 0
    audit_head: str | None = None
    """The audit chain's head (``<id>:<hash>``) when its report was last made."""


class ReviewItem(SQLModel, table=True):
    """One grant under review: who held which role through which path, since when, as the campaign started."""

    __table_args__ = (
        Index("ix_reviewitem_reviewer_state", "reviewer", "state", "campaign_id", "id"),
        Index("ix_reviewitem_campaign_state", "campaign_id", "state", "id"),
        # A reviewer's page grouped by holder, or by role: one range of one of these, keyset on (key, id).
        Index("ix_reviewitem_reviewer_user", "reviewer", "user_email", "id"),
        Index("ix_reviewitem_reviewer_role", "reviewer", "role", "id"),
        UniqueConstraint("campaign_id", "grant_id", name="uq_reviewitem_campaign_grant"),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="reviewcampaign.id")
    grant_id: int
    user_email: str | None = None
    """The holder (None: an account no Lapse user is linked to; it goes to the fallback reviewers)."""
    account: str
    role: str
    path: str
    """A ``GrantPath`` value."""
    policy: str | None = None
    request_id: str | None = None
    justification: str = ""
    """The request's justification (a JIT grant) or the policy's name (a birthright grant)."""
    granted_at: datetime = Field(sa_column=_utc(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    manager_email: str | None = None
    holder_active: bool = True
    last_used: datetime | None = Field(default=None, sa_column=_utc())
    """When the access was last seen in use, where a connector can tell; None: unknown."""
    reviewer: str
    """Who reviews it now (an email; never the holder)."""
    fallback: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Who the item goes to if its reviewer leaves or it is escalated (never the holder)."""
    escalated: bool = False
    state: str = "open"
    """An ``access.reviews.ItemState``."""
    draft: str | None = None
    """A decision held until the reviewer submits (``keep`` or ``revoke``)."""
    draft_comment: str = ""
    decision: str | None = None
    comment: str = ""
    decided_by: str | None = None
    decided_at: datetime | None = Field(default=None, sa_column=_utc())
    by_default: bool = False
    """Decided by the definition's default at the deadline, not by a person."""
    outcome: str | None = None
    """An ``access.reviews.ItemOutcome`` once acted on."""
    acted_at: datetime | None = Field(default=None, sa_column=_utc())
    proof: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """For a revoke: the audit event that records it in the target and the grant's end."""
    error: str | None = None


class BirthrightException(SQLModel, table=True):
    """A policy no longer grants ``role`` to ``user_email``: a review revoked it (a sync would grant it back)."""

    __table_args__ = (UniqueConstraint("policy", "user_email", "role", name="uq_birthright_exception"),)
    id: int | None = Field(default=None, primary_key=True)
    policy: str = Field(index=True)
    user_email: str
    role: str
    created_by: str
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    comment: str = ""
    campaign_id: str | None = None
    item_id: int | None = None


# --- notifications ---------------------------------------------------------------------------


class Notification(SQLModel, table=True):
    """The notification outbox: one message for one channel, queued in the transaction that recorded its event
    (``store.notifications``), sent by the workers' dispatcher with retries (``activities.notify``)."""

    __table_args__ = (
        Index("ix_notification_due", "state", "due_at", "id"),
        Index("ix_notification_subject", "subject", "recipient", "kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=512)
    """The notice's key and the channel: queueing the same event twice queues nothing twice."""
    channel: str
    """An ``access.notifications.Channel`` value."""
    target: str = ""
    """Which of the channel's destinations: a Slack channel or Teams/webhook name from the configuration; empty
    for a person's direct message or email."""
    kind: str
    """An ``access.notifications.NoticeKind`` value."""
    recipient: str | None = None
    subject: str
    """The request's (or campaign's) id: the request's page lists the notifications about it."""
    notice: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The ``access.notifications.Notice``, as JSON."""
    state: str = "pending"
    """``pending``, ``sent``, ``failed`` (gave up after its retries: recorded on the request and audited) or
    ``skipped`` (nothing to send it to, e.g. a person Slack does not know)."""
    attempts: int = 0
    due_at: datetime = Field(sa_column=_utc(nullable=False))
    """When it is next tried."""
    claimed_until: datetime | None = Field(default=None, sa_column=_utc())
    """A dispatcher is sending it until then; after, another may (its worker died)."""
    created_at: datetime = Field(sa_column=_utc(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_utc())
    error: str | None = None
    """The last failure, in words."""
    ref: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """What the channel made of it (a Slack message's ``channel`` and ``ts``), so a later event can update it."""


class NotificationPreference(SQLModel, table=True):
    """Which of the configured personal channels a person is told by; no row: every configured one."""

    user_email: str = Field(primary_key=True)
    channels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=_utc(nullable=False))


class ChatIdentity(SQLModel, table=True):
    """A person's identity in a chat system (their Slack user id), learnt by email and kept: Slack's
    ``users.lookupByEmail`` is rate limited, and an interaction names the Slack user, not the email."""

    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_chatidentity_external"),)
    user_email: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    external_id: str
    looked_up_at: datetime = Field(sa_column=_utc(nullable=False))


class OrgSection(SQLModel, table=True):
    """A section of the organisation file kept whole, as JSON: ``notifications`` and ``on_call`` (their models
    are in ``activities.notify.config``; secrets in them are references only)."""

    name: str = Field(primary_key=True)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_by: str
    updated_at: datetime = Field(sa_column=_utc(nullable=False))


# --- break-glass -----------------------------------------------------------------------------


class BreakGlassReview(SQLModel, table=True):
    """An emergency grant's post-hoc review (``access.break_glass``), written by its review workflow's activity:
    the admins' list flags the condemned and unreviewed ones, the request's page shows it."""

    request_id: str = Field(primary_key=True)
    requester: str = Field(index=True)
    role: str
    justification: str = ""
    state: str = Field(index=True)
    """``open``, ``confirmed``, ``condemned`` or ``unreviewed``."""
    opened_at: datetime = Field(sa_column=_utc(nullable=False))
    deadline: datetime = Field(sa_column=_utc(nullable=False))
    reviewers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notify: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    escalated_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_utc())
    decided_by: str | None = None
    decided_at: datetime | None = Field(default=None, sa_column=_utc())
    comment: str = ""


class EmergencyStart(SQLModel, table=True):
    """An emergency request being started: one per person and role at a time, whichever API process starts it.
    Taken before the "one at a time" check (``store.break_glass``) and released once the request's workflow has
    recorded it, or when nothing was started; a start whose outcome is unknown leaves it to go stale."""

    requester: str = Field(primary_key=True)
    role: str = Field(primary_key=True)
    request_id: str
    started_at: datetime = Field(sa_column=_utc(nullable=False))
