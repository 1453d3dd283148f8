"""Loading an organisation file: check it whole, store it, then bring up to date what it implies — discovery
schedules, a first discovery and directory sync where its birthright policies wait on one, the birthright sync.

``POST /api/org`` (and so ``lapse load-org``) calls this; ``lapse run`` loads its first file itself, before
Temporal is up, with the same connector check (``checked_connector``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError

from access import names
from access.connectors import Connector
from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from activities.connectors import built, check_config
from activities.notify.config import check_notifications, check_on_call
from starter.services.authorization import require_admin
from starter.services.discovery import discover_now, ensure_schedules
from starter.services.review_runs import upsert_review_schedule
from starter.services.syncs import ensure_sync_schedules, trigger_now
from store.audit_log import append_audit
from store.db import session_scope
from store.org import OrgError, OrgFile
from store.org_check import OpenReference
from store.org_load import load
from store.org_open import open_references
from store.settings import Settings
from store.tables import User

LISTED_PROBLEMS = 20
"""A file with many problems gets the first few named, not a refusal as large as the file."""


def checked_connector(kind: str, config: Mapping[str, Any]) -> Connector:
    """The connector an organisation file's integration gets (no I/O), or ``ValueError`` naming what is wrong
    with its kind or configuration: the connector check the organisation file's loader takes."""
    check_config(kind, config)
    connector = built(kind, config)
    assert connector is not None  # check_config has just built it
    return connector


class OpenReferenceOut(BaseModel):
    """A birthright policy's group or role that names nothing: the policy grants nothing through it until it
    does."""

    policy: str
    kind: Literal["group", "role"]
    reference: str
    """As the policy stores it."""
    state: Literal["waiting", "unresolved"]
    """``waiting`` for the first sync of the directory it names or the first discovery of its integration;
    ``unresolved`` when nothing is to bring it (that run is over, or it names no directory or integration
    not yet read): fix the policy."""
    waits_for: str | None
    """The directory or integration it waits for (``waiting`` only)."""
    given: str | None = None
    """What the file said, when it is stored otherwise: a bare group name qualified with the one directory not
    synced yet (``dbusers`` stored as ``corp:dbusers``)."""
    why: str
    """What is wrong, and what would resolve it (``waits for the first directory sync of corp``)."""

    @classmethod
    def of(cls, reference: OpenReference) -> OpenReferenceOut:
        return cls(
            policy=reference.policy,
            kind=reference.kind,
            reference=reference.reference,
            state="waiting" if reference.waits_for else "unresolved",
            waits_for=reference.waits_for,
            given=reference.given,
            why=reference.why,
        )


def checked_section(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An organisation file's whole section (``notifications``, ``on_call``) as it is stored, checked by its
    model (a ``ValueError`` says what is wrong): the section check the organisation file's loader takes."""
    checks = {"notifications": check_notifications, "on_call": check_on_call}
    if name not in checks:
        raise ValueError(f"no section {name!r}")
    checked: dict[str, Any] = checks[name](body).model_dump(mode="json", exclude_defaults=True)
    return checked


class OrgLoaded(BaseModel):
    """What loading an organisation file stored and started."""

    loaded: dict[str, int]
    """How many entries of each section the file had (each was created or updated)."""
    sha256: str
    """The SHA-256 of the file's canonical JSON, as the audit event ``org.loaded`` records it."""
    open_references: list[OpenReferenceOut]
    """Birthright references a first directory sync or discovery will resolve (started below); until then
    they grant nothing. ``GET /api/org/open-references`` lists those still open, and those that run did not
    bring as ``unresolved``."""
    schedules: list[str]
    """The discovery schedules and the file's recurring review definitions' (``review-<name>``), now up to date."""
    started: list[str]
    """What ran or was started, in order: ``discovery-<name>`` (run and waited for, and succeeded),
    ``directory-sync``, ``birthright-sync``."""
    failed: list[str]
    """What failed to run (``discovery-<name>``); ``notes`` says why."""
    applied: bool
    """False when the file was stored but not all it implies was brought up to date (``failed``, or the
    workflow service did not answer; ``notes`` says why): the schedules are at the API's next start, the
    syncs and discoveries at their next run."""
    notes: list[str]


def store_org(settings: Settings, actor: User, org: OrgFile) -> list[OpenReference]:
    """Check ``org`` whole and store it in one transaction, with its audit event; nothing is stored when any
    of it is refused (``Invalid``, naming the first field at fault and listing every problem).

    The event (``org.loaded``) names, per section, what the file created and updated — birthright policies,
    approval workflows, assignments, integrations and their roles, groups, users made or unmade admins,
    deactivated or reactivated or moved between the file's groups — the open references it left, and the
    SHA-256 of the file's canonical JSON."""
    require_admin(actor)
    try:
        with session_scope(settings.db_url) as session:
            loaded = load(session, org, connectors=checked_connector, sections=checked_section)
            opened = loaded.opened
            details: dict[str, Any] = {"loaded": _counts(org), "sha256": org.sha256(), "changes": loaded.changes()}
            if opened:
                details["open_references"] = [f"{o.policy}: {o.reference}" for o in opened]
            append_audit(session, [AuditEntry(actor=actor.email, action="org.loaded", target="org", details=details)])
    except OrgError as error:
        errors = [{"field": p.field or "body", "message": p.message} for p in error.problems]
        listed = errors[:LISTED_PROBLEMS]
        message = "; ".join(e["message"] for e in listed)
        if len(errors) > len(listed):
            message += f"; and {len(errors) - len(listed)} more"
        raise Refusal(RefusalKind.INVALID, message, field=listed[0]["field"], extra={"errors": listed}) from None
    return opened


async def load_org_file(settings: Settings, client: Client, actor: User, org: OrgFile) -> OrgLoaded:
    """Store ``org`` (see ``store_org``), then apply what it implies, as ``lapse run`` does at start: discovery
    schedules for its integrations; a first discovery of those its birthright roles wait on, then the
    directory sync its groups wait on (or its new directory needs); the birthright sync when it has policies."""
    opened = await asyncio.to_thread(store_org, settings, actor, org)  # a large file takes a while to store
    result = OrgLoaded(
        loaded=_counts(org),
        sha256=org.sha256(),
        open_references=[OpenReferenceOut.of(o) for o in opened],
        schedules=[],
        started=[],
        failed=[],
        applied=True,
        notes=[],
    )
    asking = [w.name for w in org.approval_workflows if w.reauthenticate_within is not None]
    if asking and settings.auth == "proxy":
        result.notes.append(
            f"approval workflows {', '.join(asking)} ask for a recent sign-in (reauthenticate_within), which Lapse "
            "cannot check behind an SSO proxy (LAPSE_AUTH=proxy): requests under them cannot be approved, "
            "extended or revoked by someone else until people sign in to Lapse through OIDC"
        )
    try:
        result.schedules = await ensure_schedules(client, settings)
        await ensure_sync_schedules(client, settings)
        for review in org.reviews:  # a recurring definition's schedule; a one-off's, if it had one, goes
            await upsert_review_schedule(client, settings, review)
            if review.schedule is not None:
                result.schedules.append(review.schedule_id)
        # Discovery first, waited for: the birthright sync the directory sync ends with then finds the roles.
        undiscovered = sorted({o.reference.split("/", 1)[0] for o in opened if o.kind == "role"})
        outcomes = await asyncio.gather(*(_discover(client, settings, name) for name in undiscovered))
        for name, outcome in zip(undiscovered, outcomes, strict=True):
            (result.failed if outcome else result.started).append(names.discovery_id(name))
            if outcome:
                result.notes.append(outcome)
        result.applied = not result.failed
        if any(o.kind == "group" for o in opened) or any(i.directory for i in org.integrations):
            await trigger_now(client, settings, names.DIRECTORY_SYNC)
            result.started.append(names.DIRECTORY_SYNC)
        if org.birthright_policies:
            await trigger_now(client, settings, names.BIRTHRIGHT_SYNC)
            result.started.append(names.BIRTHRIGHT_SYNC)
    except RPCError as error:
        result.applied = False
        result.notes.append(
            f"the file is stored, but the workflow service did not answer ({error.message}): schedules are brought "
            "up to date when the API next starts, and the syncs at their next run"
        )
    return result


def list_open_references(settings: Settings, actor: User) -> list[OpenReferenceOut]:
    """The stored birthright policies' groups and roles that name nothing now (admins): those waiting for a
    first directory sync or discovery, and those nothing is to bring (``unresolved``)."""
    require_admin(actor)
    with session_scope(settings.db_url, write=False) as session:
        return [OpenReferenceOut.of(o) for o in open_references(session, connectors=checked_connector)]


async def _discover(client: Client, settings: Settings, name: str) -> str | None:
    """Run the integration's first discovery and wait for it; what went wrong, if anything (the file stays)."""
    try:
        await discover_now(client, settings, name)
    except Refusal as refusal:  # it did not finish in time, or the target failed: its schedule tries again
        return f"{refusal.message} (its roles stay open until a discovery succeeds)"
    return None


def _counts(org: OrgFile) -> dict[str, int]:
    return {
        "users": len(org.users),
        "groups": len(org.groups),
        "integrations": len(org.integrations),
        "approval_workflows": len(org.approval_workflows),
        "assignments": len(org.assignments),
        "birthright_policies": len(org.birthright_policies),
        "reviews": len(org.reviews),
    }
