"""Access review definitions (admins): what a campaign holds, who reviews it, by when; previewed before they are
saved or started; a recurring one keeps its Temporal Schedule (``review-<name>``) beside the syncs'.

Every change is audited (``review_definition.created`` / ``.updated`` / ``.deleted``). A definition is stored first
and its schedule brought up to date after: if Temporal does not answer then, the definition stands and the answer
says so (the API's next start brings every schedule up to date, ``ensure_review_schedules``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select
from temporalio.client import Client
from temporalio.service import RPCError

from access.errors import Refusal, RefusalKind
from access.reviews import ReviewDefinition, ReviewPreview
from access.types import AuditEntry
from starter.services import review_runs
from starter.services.authorization import require_admin
from store import review_scope
from store.audit_log import append_audit
from store.db import lock, session_scope
from store.review_definitions import definition_of, definition_problems, find_definition, save_definition
from store.settings import Settings
from store.tables import ReviewCampaign, ReviewDefinitionRow, User

log = logging.getLogger(__name__)

LOCK = "review-definitions"


class DefinitionOut(BaseModel):
    definition: ReviewDefinition
    source: str
    """``api`` (the API or the CLI) or ``file`` (the organisation file's ``reviews:``, which a later load of the
    file overwrites)."""
    updated_by: str
    updated_at: datetime
    schedule: str | None
    """The Temporal Schedule that starts its campaigns (``review-<name>``); None for a one-off definition."""
    campaigns: int
    """How many campaigns it has started."""
    last_campaign: str | None
    notes: list[str] = []
    """What did not go through with a change (its schedule, when Temporal did not answer)."""


class CampaignStarted(BaseModel):
    campaign: str
    """The campaign's id (``<definition>-<YYYYMMDDTHHMMSS>``); ``GET /api/reviews/campaigns/{id}`` follows it."""


def _invalid(problems: list[tuple[str, str]]) -> Refusal:
    field, message = problems[0]
    errors = [{"field": f, "message": m} for f, m in problems[:20]]
    more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
    return Refusal(RefusalKind.INVALID, message + more, field=field or None, extra={"errors": errors})


def _find(session: Session, name: str) -> ReviewDefinitionRow:
    row = find_definition(session, name)
    if row is None:
        raise Refusal(RefusalKind.NOT_FOUND, f"there is no review definition {name!r}", field="name")
    return row


def _out(session: Session, row: ReviewDefinitionRow, notes: list[str] | None = None) -> DefinitionOut:
    definition = definition_of(row)
    count, last = session.exec(  # type: ignore[call-overload]
        select(func.count(), func.max(ReviewCampaign.id)).where(ReviewCampaign.definition == row.name)
    ).one()
    return DefinitionOut(
        definition=definition,
        source=row.source,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        schedule=definition.schedule_id if definition.schedule is not None else None,
        campaigns=int(count or 0),
        last_campaign=last,
        notes=notes or [],
    )


def _audit(session: Session, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
    append_audit(session, [AuditEntry(actor=actor, action=action, target=target, details=details)])


async def _schedule(
    client: Client, settings: Settings, definition: ReviewDefinition, *, had: bool, gone: bool = False
) -> list[str]:
    """Bring the definition's schedule to what it says (none for a one-off or a deleted one; ``had``: it had one
    before); notes on failure."""
    if definition.schedule is None and not had:
        return []
    try:
        if gone or definition.schedule is None:
            await review_runs.delete_review_schedule(client, settings, definition.name)
        else:
            await review_runs.upsert_review_schedule(client, settings, definition)
    except RPCError as error:
        log.warning("could not bring the schedule %s up to date: %s", definition.schedule_id, error.message)
        return [
            f"the workflow service did not answer ({error.message}): the schedule {definition.schedule_id} is brought "
            "up to date when the API next starts"
        ]
    return []


# --- the definitions ----------------------------------------------------------------------------


def list_definitions(settings: Settings, admin: User) -> list[DefinitionOut]:
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(ReviewDefinitionRow).order_by(col(ReviewDefinitionRow.name)))
        return [_out(session, row) for row in rows]


def get_definition(settings: Settings, admin: User, name: str) -> DefinitionOut:
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        return _out(session, _find(session, name))


def _store(settings: Settings, admin: User, definition: ReviewDefinition, *, creating: bool) -> bool:
    """Check and store the definition, audited; whether the one it replaces had a schedule."""
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        row = find_definition(session, definition.name)
        if creating and row is not None:
            raise Refusal(
                RefusalKind.CONFLICT, f"a review definition named {definition.name!r} already exists", field="name"
            )
        if not creating and row is None:
            _find(session, definition.name)
        if problems := definition_problems(session, definition):
            raise _invalid(problems)
        before = row.body if row is not None else None
        if save_definition(session, definition, source="api", by=admin.email) is not None:
            details = {"definition": definition.model_dump(mode="json")} | ({"before": before} if before else {})
            action = "review_definition.created" if creating else "review_definition.updated"
            _audit(session, admin.email, action, definition.name, details)
        return bool(before and before.get("schedule"))


async def create_definition(
    client: Client, settings: Settings, admin: User, definition: ReviewDefinition
) -> DefinitionOut:
    """Store a new definition; a recurring one gets its schedule at once."""
    require_admin(admin)
    _store(settings, admin, definition, creating=True)
    notes = await _schedule(client, settings, definition, had=False)
    with session_scope(settings.db_url, write=False) as session:
        return _out(session, _find(session, definition.name), notes)


async def update_definition(
    client: Client, settings: Settings, admin: User, name: str, definition: ReviewDefinition
) -> DefinitionOut:
    """Replace a definition whole. Campaigns it already started keep the definition they started with."""
    require_admin(admin)
    if definition.name != name:
        raise Refusal(
            RefusalKind.INVALID,
            f"the body names {definition.name!r}, the path {name!r}: a name cannot change",
            field="name",
        )
    had = _store(settings, admin, definition, creating=False)
    notes = await _schedule(client, settings, definition, had=had)
    with session_scope(settings.db_url, write=False) as session:
        return _out(session, _find(session, name), notes)


async def delete_definition(client: Client, settings: Settings, admin: User, name: str) -> list[str]:
    """Delete a definition and its schedule; its campaigns stay, with their items and reports. Returns notes."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        lock(session, LOCK)
        row = _find(session, name)
        definition = definition_of(row)
        session.delete(row)
        _audit(session, admin.email, "review_definition.deleted", name, {"definition": row.body})
    return await _schedule(client, settings, definition, had=definition.schedule is not None, gone=True)


def preview_definition(settings: Settings, admin: User, definition: ReviewDefinition) -> ReviewPreview:
    """What the definition would hold if started now: items, reviewers, by path, the first few. Saves nothing."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        if problems := definition_problems(session, definition):
            raise _invalid(problems)
        return review_scope.preview(session, definition)


def preview_stored(settings: Settings, admin: User, name: str) -> ReviewPreview:
    """What a stored definition would hold if started now."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        return review_scope.preview(session, definition_of(_find(session, name)))


async def start_campaign(client: Client, settings: Settings, admin: User, name: str) -> CampaignStarted:
    """Start a campaign of the definition now (a recurring one's schedule starts them on its own too)."""
    require_admin(admin)
    with session_scope(settings.db_url, write=False) as session:
        _find(session, name)
    campaign = await review_runs.start_campaign(client, settings, name, started_by=admin.email)
    return CampaignStarted(campaign=campaign)


async def ensure_review_schedules(client: Client, settings: Settings) -> list[str]:
    """Bring every recurring definition's schedule up to date (the API does at start, as for the syncs')."""
    with session_scope(settings.db_url, write=False) as session:
        definitions = [definition_of(row) for row in session.exec(select(ReviewDefinitionRow))]
    for definition in definitions:
        if definition.schedule is not None:
            await review_runs.upsert_review_schedule(client, settings, definition)
    return [d.schedule_id for d in definitions if d.schedule is not None]
