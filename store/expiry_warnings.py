"""The expiring-soon warning, found by a scan of the grants ledger rather than a timer in each grant's run.

A grant's holder is warned a little before it ends (``access.notifications.warning_lead``). Ten thousand grants
ending in one minute made ten thousand workflow timers and bookkeeping writes in the minutes their revokes
needed the Temporal server and the app DB; a scan costs neither. Every worker's notification dispatcher
(``activities.notify.expiry``) looks at the active grants whose end is near, and for each one whose warning is
due it marks the end warned of (``Grant.warned_for``), writes the ``grant.expiring_soon`` audit event and queues
the requester's notices, all in one transaction. An extension moves the end, so the new end is warned of again.
Two workers scanning at once warn a grant once: the mark is a conditional update of the row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from access import names
from access.durations import format_duration
from access.grants import GrantPath
from access.notifications import DEFAULT_WARNING, expiry_notices, warning_due
from access.requests import RequestState, RequestStatus
from access.types import AuditEntry
from store.audit_log import append_audit
from store.db import lock
from store.ledger import HELD
from store.notifications import Routes, queue
from store.tables import AccessRequest, Grant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    """A grant whose holder is to be warned now of its end ``expires_at``, ``lead`` ahead."""

    grant_id: int
    expires_at: datetime
    lead: timedelta


def due(session: Session, *, now: datetime, configured: timedelta | None) -> list[Due]:
    """The held JIT grants whose warning is due at ``now`` and not given for their current end, soonest end
    first (then by id: two workers' scans mark rows in the same order, so they never deadlock). One index
    range: the grants ending within the longest lead there can be."""
    window = configured if configured is not None else DEFAULT_WARNING
    query = select(Grant.id, Grant.granted_at, Grant.expires_at).where(
        col(Grant.active).is_(True),
        col(Grant.expires_at) > now,
        col(Grant.expires_at) <= now + window,
        Grant.path == GrantPath.JIT,
        col(Grant.request_id).is_not(None),
        Grant.phase == HELD,
        or_(col(Grant.warned_for).is_(None), col(Grant.warned_for) != col(Grant.expires_at)),
    )
    found: list[Due] = []
    for grant_id, granted_at, expires_at in session.exec(query.order_by(col(Grant.expires_at), col(Grant.id))):
        if grant_id is None or expires_at is None:
            continue
        lead = warning_due(granted_at, expires_at, configured, now=now)
        if lead is not None:
            found.append(Due(grant_id, expires_at, lead))
    return found


def warn(session: Session, grants: Sequence[Due], routes: Routes, *, now: datetime) -> int:
    """Warn the holders of ``grants`` (from :func:`due`) in the session's transaction: each grant still held
    with the same end and not warned of it meanwhile (by another worker) is marked, audited and its notices
    queued. Returns how many were warned."""
    # The audit chain's lock first, as every writer takes it before the rows it changes (no deadlock).
    lock(session, "audit")
    marked: dict[str, Due] = {}
    for grant in grants:
        row = session.execute(
            update(Grant)
            .where(
                col(Grant.id) == grant.grant_id,
                col(Grant.active).is_(True),
                col(Grant.phase) == HELD,
                col(Grant.expires_at) == grant.expires_at,
                or_(col(Grant.warned_for).is_(None), col(Grant.warned_for) != grant.expires_at),
            )
            .values(warned_for=grant.expires_at)
            .returning(col(Grant.request_id))
        ).first()
        if row is not None and row[0] is not None:
            marked[row[0]] = grant
    requests: Sequence[AccessRequest] = []
    if marked:
        requests = session.exec(select(AccessRequest).where(col(AccessRequest.id).in_(marked))).all()
    events: list[AuditEntry] = []
    statuses: list[RequestStatus] = []
    for request in requests:
        grant = marked[request.id]
        try:
            status = RequestStatus.model_validate(request.status)
        except ValidationError as error:  # recorded by another version: marked, so the scan does not stall on it
            log.warning("request %s's status cannot be read, so its holder is not warned: %s", request.id, error)
            continue
        if status.state is not RequestState.ACTIVE:
            continue  # ending meanwhile (its run recorded it, the revoke has not claimed the grant yet)
        details = {"role": status.role, "expires_at": grant.expires_at.isoformat(), "lead": format_duration(grant.lead)}
        target = names.request_workflow_id(status.id)
        events.append(AuditEntry(actor="lapse", action="grant.expiring_soon", target=target, details=details, at=now))
        statuses.append(status)
    append_audit(session, events)
    if not routes.empty:
        notices = [notice for s, e in zip(statuses, events, strict=True) for notice in expiry_notices(s, e)]
        queue(session, notices, routes, now=now)
    return len(events)
