"""A requester's emergency (break-glass) grants of one role, as the app DB records them.

Grants are counted per account and role (``store.ledger``): two overlapping emergency grants of one role keep
the access while either lasts. So a new emergency request is refused while the requester holds one of that
role (or had one condemned within its ``review_within``), and condemning one ends every emergency grant of the
role the requester still holds: ``starter.services.break_glass`` asks, ``activities.break_glass`` tells who
hears of the condemn what is being revoked. Both read these.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, delete, select

from access.break_glass import ReviewState
from access.requests import RequestState, RequestStatus
from store.db import lock
from store.tables import AccessRequest, EmergencyStart
from store.tables import BreakGlassReview as ReviewRow

OPEN = (RequestState.PENDING, RequestState.PROVISIONING, RequestState.ACTIVE)
"""An emergency request in these states holds the role, or is about to."""
HELD = (RequestState.PROVISIONING, RequestState.ACTIVE)
"""An emergency grant in these states can be revoked (a revoking one is being revoked already)."""


def emergencies(
    session: Session, requester: str, role: str, states: Iterable[RequestState] = OPEN
) -> list[RequestStatus]:
    """The requester's emergency requests of the role in ``states``, oldest first (an index range: requester and
    state; a person has few requests of a role open at once)."""
    rows = session.exec(
        select(AccessRequest)
        .where(
            AccessRequest.requester == requester,
            col(AccessRequest.state).in_([state.value for state in states]),
            AccessRequest.role == role,
        )
        .order_by(col(AccessRequest.created_at), col(AccessRequest.id))
    )
    statuses = [RequestStatus.model_validate(row.status) for row in rows]
    return [status for status in statuses if status.break_glass is not None]


def revocable_by(status: RequestStatus, actor: str, *, is_admin: bool) -> bool:
    """Whether ``actor``, condemning an emergency grant of the same requester and role, may revoke this one too:
    an admin, or one of its own reviewers (the workflow's rule for a condemned grant's revoke)."""
    return is_admin or (status.break_glass is not None and actor in status.break_glass.reviewers)


def last_condemned(session: Session, requester: str, role: str, since: datetime) -> ReviewRow | None:
    """The requester's latest emergency grant of the role condemned at or after ``since``, or None."""
    return session.exec(
        select(ReviewRow)
        .where(
            ReviewRow.requester == requester,
            ReviewRow.role == role,
            ReviewRow.state == ReviewState.CONDEMNED.value,
            col(ReviewRow.decided_at) >= since,
        )
        .order_by(col(ReviewRow.decided_at).desc())
        .limit(1)
    ).first()


def claim_start(
    session: Session, requester: str, role: str, request_id: str, now: datetime, stale_before: datetime
) -> EmergencyStart | None:
    """Claim the start of the requester's emergency request of the role for ``request_id``, or return the claim of
    the one being started already. A claim taken before ``stale_before`` is a start that never ended (its process
    died): it is taken over."""
    lock(session, "emergency-start", requester, role)
    held = session.get(EmergencyStart, (requester, role))
    if held is not None and held.started_at >= stale_before:
        return held
    if held is not None:
        session.delete(held)
        session.flush()
    session.add(EmergencyStart(requester=requester, role=role, request_id=request_id, started_at=now))
    return None


def release_start(session: Session, requester: str, role: str, request_id: str) -> None:
    """Release the claim ``claim_start`` took for ``request_id`` (not one taken over from it since)."""
    session.execute(
        delete(EmergencyStart).where(
            col(EmergencyStart.requester) == requester,
            col(EmergencyStart.role) == role,
            col(EmergencyStart.request_id) == request_id,
        )
    )
