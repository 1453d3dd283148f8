"""Birthright exceptions (admins): a policy that no longer grants a role to a user, because an access review
revoked it. Shown on their policy; an admin may remove one (audited), and the next sync grants the role again.

The engine makes them (``activities.review_revokes``); the birthright plan honours them (``access.birthright``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from access import names
from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.services.authorization import require_admin
from starter.services.syncs import trigger_now
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import BirthrightException, User

log = logging.getLogger(__name__)


class ExceptionOut(BaseModel):
    """The policy stops granting ``role`` to ``user``: who decided, when, in which campaign, and why."""

    id: int
    user: str
    role: str
    created_by: str
    created_at: datetime
    campaign_id: str | None
    """The access review campaign whose revoke made it (None: made otherwise)."""
    comment: str


def _out(row: BirthrightException) -> ExceptionOut:
    assert row.id is not None
    return ExceptionOut(
        id=row.id,
        user=row.user_email,
        role=row.role,
        created_by=row.created_by,
        created_at=row.created_at,
        campaign_id=row.campaign_id,
        comment=row.comment,
    )


def exceptions_by_policy(session: Session, policy: str | None = None) -> dict[str, list[ExceptionOut]]:
    """Each policy's exceptions (or one policy's), by role then user."""
    query = select(BirthrightException)
    if policy is not None:
        query = query.where(BirthrightException.policy == policy)
    found: dict[str, list[ExceptionOut]] = {}
    ordered = query.order_by(col(BirthrightException.role), col(BirthrightException.user_email))
    for row in session.exec(ordered):
        found.setdefault(row.policy, []).append(_out(row))
    return found


async def remove_exception(client: Client, settings: Settings, admin: User, policy: str, exception_id: int) -> None:
    """The policy grants the role to the user again: audited (``birthright_exception.removed``), and the sync
    started at once to grant it."""
    require_admin(admin)
    with session_scope(settings.db_url) as session:
        row = session.get(BirthrightException, exception_id)
        if row is None or row.policy != policy:
            raise Refusal(
                RefusalKind.NOT_FOUND,
                f"birthright policy {policy!r} has no exception {exception_id}",
                field="exception_id",
            )
        details = _out(row).model_dump(mode="json", exclude={"id"})
        session.delete(row)
        append_audit(
            session,
            [
                AuditEntry(
                    actor=admin.email,
                    action="birthright_exception.removed",
                    target=policy,
                    reason=f"{policy!r} grants {row.role} to {row.user_email} again",
                    details=details,
                )
            ],
        )
    try:
        await trigger_now(client, settings, names.BIRTHRIGHT_SYNC)
    except RPCError as error:  # removed all the same: the daily run grants it if Temporal stays out of reach
        log.warning("could not start the birthright sync: %s", error.message)
