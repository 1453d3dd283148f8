"""The expiring-soon warning of runs that started before the scan of the grants ledger gave it.

The warning (``grant.expiring_soon``, ``access.notifications.warning_lead`` ahead of the end) is given by each
worker's scan of the held grants (``store.expiry_warnings``), not by the grant's run: ten thousand grants ending
in one minute would otherwise be ten thousand timers and bookkeeping writes while their revokes need the
server. Runs from before the scan still hold the timer they started, so replay finds the same commands; a
timer of theirs that fires now gives nothing (the scan warns), and marks the end warned of so it is not set
again.
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
        """The warning still to time for the grant's current end: only in runs that timed their warning
        before the scan existed. A grant too short for one, or whose holder was warned of this end already,
        adds no command (no patch marker either)."""
        status = self._status
        granted_at, expires_at = status.granted_at, status.expires_at
        if granted_at is None or expires_at is None or status.warned_for == expires_at:
            return None
        # The 10% rule reads the grant's length as it is now, extensions included.
        lead = warning_lead(expires_at - granted_at, self._configured)
        if lead is None or workflow.patched("expiry-warning-by-scan") or not workflow.patched("expiry-warning"):
            return None
        return Due(at=expires_at - lead, lead=lead, expires_at=expires_at)

    async def give(self, due: Due) -> None:
        """Warn of the end ``due`` was for; an end moved meanwhile is warned of on its own."""
        status = self._status
        if status.expires_at != due.expires_at:
            return
        status.warned_for = due.expires_at
        if workflow.patched("expiry-warning-given-by-scan"):
            return  # the scan of the grants ledger warns of this end (store.expiry_warnings)
        record = self._record
        event = record.audit(
            "lapse",
            "grant.expiring_soon",
            expires_at=due.expires_at.isoformat(),
            lead=format_duration(due.lead),
        )
        await record.write([event])
