"""The expiring-soon scan each worker's dispatcher runs (``store.expiry_warnings``): warn the holders of the
grants whose warning is due, a batch per transaction so the workflows' bookkeeping is never held up long."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from activities.notify.settings import stored_routes, stored_settings
from store import expiry_warnings
from store.db import session_scope

SCAN_EVERY = timedelta(seconds=2)
"""How often a dispatcher looks for warnings due: the shortest lead is a minute (a 10-minute grant)."""
BATCH = 100
"""Warnings per transaction (which holds the audit chain's lock)."""

log = logging.getLogger(__name__)


def warn_expiring(db_url: str, *, now: datetime | None = None, batch: int = BATCH) -> int:
    """Warn every holder whose warning is due at ``now`` (the clock's time if None) and return how many."""
    at = now or datetime.now(UTC)
    with session_scope(db_url, write=False) as session:
        settings = stored_settings(session)
        configured = settings.expiry_warning if settings is not None else None
        found = expiry_warnings.due(session, now=at, configured=configured)
    warned = 0
    for start in range(0, len(found), batch):
        at = now or datetime.now(UTC)
        chunk = [grant for grant in found[start : start + batch] if grant.expires_at > at]
        try:
            with session_scope(db_url) as session:
                warned += expiry_warnings.warn(session, chunk, stored_routes(session), now=at)
        except Exception:  # the next batches still go: one that fails is tried again at the next scan
            log.exception("warning the holders of %d grants ending soon failed", len(chunk))
    return warned
