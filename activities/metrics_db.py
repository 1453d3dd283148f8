"""The app DB's gauges on ``/metrics``: read at scrape time, at most once every few seconds per process.

Requests by state, approvals waiting and the oldest's age, active grants by path and integration, revokes in
flight and the oldest's age, the audit chain's last check, each integration's discovery, the notification outbox.
Every process reads the same DB, so every process reports the same values: dashboards and alerts take ``max()``
over processes. A few indexed aggregate queries; a scrape storm costs one read per ``CACHE_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from access.requests import RequestState
from store import notifications as outbox
from store.db import session_scope
from store.ledger import REVOKING
from store.tables import AccessRequest, Grant, Integration, Notification, SyncState

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
AUDIT_CHECKED = "audit-chain"
"""The ``SyncState`` row that holds the audit chain's last check: ``finished_at`` when, ``error`` what was wrong."""


def record_audit_check(db_url: str, problem: str) -> None:
    """Keep how the audit chain's latest check went (``problem`` empty: intact), for every process's gauges."""
    with session_scope(db_url) as session:
        row = session.get(SyncState, AUDIT_CHECKED) or SyncState(name=AUDIT_CHECKED)
        row.finished_at, row.error = datetime.now(UTC), problem or None
        session.add(row)


class AppDbGauges(Collector):
    """A prometheus-client collector of the app DB's gauges, cached for ``CACHE_SECONDS``."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._families: list[Metric] = []

    def describe(self) -> Iterator[Metric]:
        """Nothing to check for clashes: registering (at import of the API's module, say) reads no DB; the
        gauges' names are all ``lapse_``-prefixed and owned here."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # concurrent scrapes wait for one read instead of each making their own
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._families = self._read()
                self._read_at = time.monotonic()
            families = self._families
        yield from families

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily("lapse_app_db_up", "1 when the app DB's gauges were read at this scrape, 0 when not.")
        try:
            with session_scope(self.db_url, write=False) as session:
                families = read_gauges(session, datetime.now(UTC))
        except Exception as error:  # the DB down: say so, and keep the process's own metrics served
            log.warning("reading the app DB's gauges failed: %s", type(error).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]


def read_gauges(session: Session, now: datetime) -> list[Metric]:
    """The gauges, as the app DB holds them ``now``."""
    return [*_requests(session, now), *_grants(session, now), *_audit(session), *_discovery(session), _outbox(session)]


def _age(now: datetime, since: datetime | None) -> float:
    if since is None:
        return 0.0
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max((now - since).total_seconds(), 0.0)


def _requests(session: Session, now: datetime) -> list[Metric]:
    counts: dict[str, int] = {state.value: 0 for state in RequestState}
    for state, count in session.execute(
        sa_select(col(AccessRequest.state), func.count()).group_by(col(AccessRequest.state))
    ):
        if state in counts:  # a state this version does not know stays out: labels stay bounded
            counts[state] = count
    by_state = GaugeMetricFamily(
        "lapse_requests", "Access requests by their state now (ended ones included: they only grow).", labels=["state"]
    )
    for state, count in counts.items():
        by_state.add_metric([state], count)
    pending, oldest = session.execute(
        sa_select(func.count(), func.min(col(AccessRequest.created_at))).where(
            col(AccessRequest.state) == RequestState.PENDING.value
        )
    ).one()
    approvals = GaugeMetricFamily("lapse_pending_approvals", "Requests waiting for an approver's decision.")
    approvals.add_metric([], pending)
    age = GaugeMetricFamily(
        "lapse_oldest_pending_approval_age_seconds",
        "How long the oldest request waiting for a decision has waited (0 when none waits).",
    )
    age.add_metric([], _age(now, oldest))
    revoking = GaugeMetricFamily(
        "lapse_revoking_requests",
        "Requests whose revoke is failing and being retried (state revoking): the target still grants the access.",
    )
    revoking.add_metric([], counts[RequestState.REVOKING.value])
    return [by_state, approvals, age, revoking]


def _grants(session: Session, now: datetime) -> list[Metric]:
    """Active grants by path and integration (a role path's first part), and the oldest revoke in flight."""
    active: dict[tuple[str, str], int] = {}
    in_flight = 0
    oldest: datetime | None = None
    rows = session.execute(
        sa_select(col(Grant.path), col(Grant.role), col(Grant.phase), func.count(), func.min(col(Grant.phase_at)))
        .where(col(Grant.active).is_not(False))
        .group_by(col(Grant.path), col(Grant.role), col(Grant.phase))
    )
    for path, role, phase, count, since in rows:
        key = (path, role.split("/", 1)[0])
        active[key] = active.get(key, 0) + count
        if phase == REVOKING:
            in_flight += count
            if since is not None and (oldest is None or _age(now, since) > _age(now, oldest)):
                oldest = since
    grants = GaugeMetricFamily(
        "lapse_active_grants",
        "Grants in force now, by path (jit, birthright, external) and integration.",
        labels=["path", "integration"],
    )
    for (path, integration), count in sorted(active.items()):
        grants.add_metric([path, integration], count)
    revokes = GaugeMetricFamily(
        "lapse_revokes_in_flight", "Grants whose revoke has begun and is not confirmed yet (any path)."
    )
    revokes.add_metric([], in_flight)
    age = GaugeMetricFamily(
        "lapse_oldest_revoking_age_seconds",
        "How long the oldest revoke not yet confirmed has been going (0 when none): minutes mean a target that "
        "keeps refusing or cannot be reached, while the access stays.",
    )
    age.add_metric([], _age(now, oldest))
    return [grants, revokes, age]


def _audit(session: Session) -> list[Metric]:
    checked = session.get(SyncState, AUDIT_CHECKED)
    if checked is None or checked.finished_at is None:
        return []  # never checked yet: no value rather than a guess
    ok = GaugeMetricFamily(
        "lapse_audit_chain_ok",
        "1 when the last scheduled audit checkpoint found the log still reaching the previous checkpoint "
        "unchanged, 0 when not (events deleted or rewritten): run `lapse audit verify` to see where.",
    )
    ok.add_metric([], 0 if checked.error else 1)
    at = GaugeMetricFamily(
        "lapse_audit_chain_verified_timestamp_seconds", "When the audit chain was last checked (Unix time)."
    )
    at.add_metric([], _timestamp(checked.finished_at))
    return [ok, at]


def _discovery(session: Session) -> list[Metric]:
    last = GaugeMetricFamily(
        "lapse_discovery_last_success_timestamp_seconds",
        "When discovery last read this integration's target and reconciled it (Unix time).",
        labels=["integration"],
    )
    failing = GaugeMetricFamily(
        "lapse_discovery_failing",
        "1 when this integration's last discovery failed (the catalog and external grants are going stale).",
        labels=["integration"],
    )
    rows = session.execute(
        sa_select(col(Integration.name), col(Integration.discovered_at), col(Integration.discovery_error))
    )
    for name, discovered_at, error in rows:
        if discovered_at is None and error is None:
            continue  # never discovered (the ledger, or not yet): nothing to watch
        if discovered_at is not None:
            last.add_metric([name], _timestamp(discovered_at))
        failing.add_metric([name], 1 if error else 0)
    return [last, failing]


def _outbox(session: Session) -> Metric:
    pending = GaugeMetricFamily(
        "lapse_notifications_pending",
        "Notifications queued and not yet sent or given up, by channel.",
        labels=["channel"],
    )
    rows = session.execute(
        sa_select(col(Notification.channel), func.count())
        .where(col(Notification.state) == outbox.PENDING)
        .group_by(col(Notification.channel))
    )
    for channel, count in rows:
        pending.add_metric([channel], count)
    return pending


def _timestamp(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
