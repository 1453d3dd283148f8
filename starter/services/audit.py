"""The audit log: read it (or export it as CSV), check that nobody edited, removed or forged any of it, and
record refusals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar
from temporalio.client import Client

from access import names
from access.checkpoint import Head
from access.errors import Refusal
from access.types import AuditEntry
from activities.audit import latest_checkpoint
from starter.services.authorization import require_admin
from starter.services.fields import moment_of
from store.audit_log import AuditReport, audit_refusal, audit_report, chain_id
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, User


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    details: dict[str, Any]
    key_id: str
    """The audit key its MAC was made with; empty for events from before the keyed chain."""


class AuditProblemOut(BaseModel):
    kind: str
    """``altered``, ``broken_link``, ``missing``, ``unknown_key``, ``unkeyed_after_keyed``, ``truncated``,
    ``checkpoint_mismatch``, ``no_checkpoint`` or ``checkpoint_unreadable``."""
    seq: int | None
    """The first sequence number (event id) concerned."""
    detail: str


class AuditCheckpointOut(BaseModel):
    seq: int
    key_id: str
    at: str
    file: str
    """Where it is kept: the head file's path."""


class AuditCheck(BaseModel):
    intact: bool
    events: int
    first_altered: int | None
    """The first broken sequence number, if any."""
    last_seq: int | None
    legacy_events: int
    """Events from before the keyed chain (migration 0005), checked by their unkeyed hash only."""
    checkpoint: AuditCheckpointOut | None
    """The head checkpointed in the data dir, which the log must reach."""
    other_checkpoints: list[AuditCheckpointOut]
    """Other checkpoints it was compared with (the audit-checkpoint workflow's last result)."""
    problems: list[AuditProblemOut]
    notes: list[str]

    @classmethod
    def of(cls, report: AuditReport) -> AuditCheck:
        head = report.checkpoint
        return cls(
            intact=report.intact,
            events=report.events,
            first_altered=report.first_broken,
            last_seq=report.last_seq,
            legacy_events=report.legacy_events,
            checkpoint=AuditCheckpointOut(seq=head.seq, key_id=head.key_id, at=head.at, file=report.checkpoint_file)
            if head
            else None,
            other_checkpoints=[
                AuditCheckpointOut(seq=h.seq, key_id=h.key_id, at=h.at, file=source)
                for source, h in report.other_checkpoints.items()
            ],
            problems=[AuditProblemOut(kind=p.kind, seq=p.seq, detail=p.detail) for p in report.problems],
            notes=report.notes,
        )


def _selected(
    *,
    target: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before: int | None,
) -> SelectOfScalar[AuditEvent]:
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc())
    actor = actor.strip().lower() if actor is not None else None  # emails are kept in lower case
    for column, value in ((AuditEvent.target, target), (AuditEvent.actor, actor), (AuditEvent.action, action)):
        if value is not None:
            query = query.where(column == value)
    if (since := moment_of(since, "since")) is not None:
        query = query.where(col(AuditEvent.at) >= since)
    if (until := moment_of(until, "until")) is not None:
        query = query.where(col(AuditEvent.at) < until)
    if before is not None:  # keyset paging: the page after the one that ended at ``before``
        query = query.where(col(AuditEvent.id) < before)
    return query


def list_events(
    settings: Settings,
    admin: User,
    *,
    target: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
) -> list[AuditOut]:
    """Audit events, newest first, of one target, actor or action when given, at or after ``since`` and before
    ``until``; ``before``: only events older than that id, for the next page (admins)."""
    require_admin(admin)
    query = _selected(target=target, actor=actor, action=action, since=since, until=until, before=before)
    with session_scope(settings.db_url, write=False) as session:
        return [AuditOut.model_validate(e, from_attributes=True) for e in session.exec(query.limit(limit))]


# --- CSV export -----------------------------------------------------------------------------

CSV_FILE = "lapse-audit.csv"
"""The name a download of the log is offered under."""
CSV_COLUMNS = ("id", "at", "actor", "action", "target", "reason", "details", "key_id")
FORMULA_STARTS = ("=", "+", "-", "@")
"""What makes a spreadsheet read a cell as a formula (with a leading tab or carriage return: OWASP's list)."""
CSV_BATCH = 1000
"""Events read per query while the export streams: memory stays flat however long the log is."""


def _cell(value: str) -> str:
    """The value as a spreadsheet shows it, as text: a cell that would start a formula gets a leading ``'``.

    Someone who can put text in the log (an email, a justification, a role's name) must not be able to run a
    formula on the auditor's machine (OWASP "CSV injection"). Leading blanks are looked through, since some
    spreadsheets skip them before deciding.
    """
    if value.startswith(("\t", "\r")) or value.lstrip().startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _row(event: AuditEvent) -> list[str]:
    at = event.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    details = json.dumps(event.details, sort_keys=True, ensure_ascii=False)
    values = [str(event.id), at, event.actor, event.action, event.target, event.reason, details, event.key_id]
    return [_cell(value) for value in values]


def audit_csv(
    settings: Settings,
    admin: User,
    *,
    target: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> Iterator[str]:
    """The events ``list_events`` would list for these filters (all of them, or the newest ``limit``), as CSV
    text in pieces to stream: a header row, then one row per event, newest first, every cell quoted and no
    cell starting a formula (admins)."""
    require_admin(admin)  # now, not when the first piece is read: a refusal must come before any answer starts
    since, until = moment_of(since, "since"), moment_of(until, "until")  # and so must a time out of range

    def pieces() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        before: int | None = None
        left = limit
        while left is None or left > 0:
            size = CSV_BATCH if left is None else min(CSV_BATCH, left)
            with session_scope(settings.db_url, write=False) as session:
                query = _selected(target=target, actor=actor, action=action, since=since, until=until, before=before)
                batch = list(session.exec(query.limit(size)))
            for event in batch:
                writer.writerow(_row(event))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(batch) < size:
                return
            before = batch[-1].id
            left = None if left is None else left - len(batch)
        if buffer.getvalue():  # only the header, when limit is 0
            yield buffer.getvalue()

    return pieces()


async def verify(client: Client | None, settings: Settings, admin: User) -> AuditCheck:
    """Check every event's MAC and link, and that the log reaches the heads checkpointed outside the app DB
    (the data dir's ``audit.head`` and the scheduled ``audit-checkpoint`` workflow's last result) (admins)."""
    require_admin(admin)
    checkpoints: dict[str, Head] = {}
    notes: list[str] = []
    if client is not None:
        try:
            found = await asyncio.wait_for(latest_checkpoint(client, settings.task_queue), timeout=10)
        except Exception as error:  # Temporal down, or a run's result unreadable: the file still counts
            notes.append(f"the audit-checkpoint workflow's last result could not be read: {type(error).__name__}")
        else:
            if found is not None and found.chain != chain_id(settings.db_url):
                notes.append(f"the audit-checkpoint workflow records another app DB ({found.chain}): not compared")
                found = None
            head = found.head() if found else None
            if head is not None:
                checkpoints[f"Temporal, {names.AUDIT_CHECKPOINT} at {head.at or '?'}"] = head
            if found is not None and found.kept:
                notes.append(f"the audit-checkpoint workflow kept its previous checkpoint: {found.kept}")

    def report() -> AuditReport:
        with session_scope(settings.db_url, write=False) as session:
            return audit_report(session, checkpoints=checkpoints)

    check = AuditCheck.of(await asyncio.to_thread(report))
    check.notes += notes
    return check


def refused(settings: Settings, actor: str, action: str, target: str, refusal: Refusal) -> Refusal:
    """Audit a refused attempt (refusals leave no trace in workflow history) and return it.

    Identical repeats within ``settings.audit_refusal_window`` become one event with their count."""
    audit_refusal(settings, AuditEntry(actor=actor, action=f"{action}.refused", target=target, reason=refusal.message))
    return refusal
