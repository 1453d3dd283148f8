"""A request's audit timeline, for whoever may see the request (its requester, its approvers, admins)."""

from __future__ import annotations

from sqlmodel import col, select

from access import names
from access.requests import RequestStatus
from starter.services.audit import AuditOut
from starter.services.requests import get_request
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, User

MAX_EVENTS = 200
"""A request's events are few (a decision each, the grant, extensions, the revoke); refusals repeated
against it are coalesced, so this bound is only reached by a request under attack: the oldest are kept."""


def request_timeline(settings: Settings, user: User, request_id: str) -> tuple[RequestStatus, list[AuditOut]]:
    """The request (refused as ``get_request`` refuses it) and its audit events, oldest first."""
    status = get_request(settings, user, request_id)
    query = (
        select(AuditEvent)
        .where(AuditEvent.target == names.request_workflow_id(request_id))
        .order_by(col(AuditEvent.id))
        .limit(MAX_EVENTS)
    )
    with session_scope(settings.db_url, write=False) as session:
        events = [AuditOut.model_validate(e, from_attributes=True) for e in session.exec(query)]
    return status, events
