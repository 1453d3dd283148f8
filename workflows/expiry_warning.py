"""The expiring-soon warning: told to a grant's holder a little before it ends, once per end.

How long before is ``access.notifications.warning_lead`` (15 minutes or 10% of the grant by default, the
organisation's ``expiry_warning`` where it set one, none for a grant under 10 minutes). The warning is an
audit event, ``grant.expiring_soon``, that the notification outbox turns into messages; an extension that
moves the end warns again before the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

from workflows.request_record import RequestRecord

with workflow.unsafe.imports_passed_through():
    from access.durations import format_duration
    from access.notifications import warning_lead
    from access.requests import RequestStatus


@dataclass(frozen=True)
class Due:
    """A warning to give at ``at``, ``lead`` before the grant's end ``expires_at``."""

    at: datetime
    lead: timedelta
    expires_at: datetime


class ExpiryWarning:
    """When the grant's holder is to be warned, and the warning."""

    def __init__(self, status: RequestStatus, record: RequestRecord, *, configured: timedelta | None) -> None:
        self._status = status
        self._record = record
        self._configured = configured

    def due(self) -> Due | None:
        """The warning still to give for the grant's current end, if any. A grant too short for one, or whose
        holder was warned of this end already, adds no command (the patch marker included); runs from before
        the warning existed never give one."""
        status = self._status
        granted_at, expires_at = status.granted_at, status.expires_at
        if granted_at is None or expires_at is None or status.warned_for == expires_at:
            return None
        # The 10% rule reads the grant's length as it is now, extensions included.
        lead = warning_lead(expires_at - granted_at, self._configured)
        if lead is None or not workflow.patched("expiry-warning"):
            return None
        return Due(at=expires_at - lead, lead=lead, expires_at=expires_at)

    async def give(self, due: Due) -> None:
        """Warn of the end ``due`` was for; an end moved meanwhile is warned of on its own."""
        status = self._status
        if status.expires_at != due.expires_at:
            return
        status.warned_for = due.expires_at
        record = self._record
        event = record.audit(
            "lapse",
            "grant.expiring_soon",
            expires_at=due.expires_at.isoformat(),
            lead=format_duration(due.lead),
        )
        await record.write([event])
