"""Lapse's Prometheus metrics: what each process counts as it works, and the one exposition both HTTP servers serve.

Counters and histograms are recorded where things happen (a revoke confirmed, a connector called, a sync run
finished, a notification handled) and are this process's own: sum them over processes. The gauges read from the
app DB at scrape time (``activities.metrics_db``, registered by :func:`register_db_collector`) are the same in
every process: take ``max()`` over processes, never ``sum()``. The Temporal SDK's metrics join them through the
runtime ``store.temporal.connect`` gives each client (``store.temporal_metrics``).

Labels are bounded: an integration's name, a grant path, a request state, a sync kind, a channel, an operation;
never a user, a request id or a role path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from access.connectors import Connector, ConnectorError, Credentials, DiscoveredRole, Discovery, HeldRole, Target
from activities.metrics_db import AppDbGauges

REVOKE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 900)
"""From a twentieth of a second (a revoke on time) to a quarter of an hour (a target down, the backstop's grace)."""
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
ITEM_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)

REVOKE_LAG = Histogram(
    "lapse_revoke_lag_seconds",
    "How long after a grant's expiry its revoke was confirmed (the target no longer grants it, or another grant "
    "covers it). Expiries only: a revoke before the grant's end is not lag. Its p99 is the promise Lapse keeps.",
    ["integration"],
    buckets=REVOKE_LAG_BUCKETS,
)
REVOKES = Counter(
    "lapse_revokes_total",
    "Grant ends confirmed (outcome expired: the grant's end had passed; revoked: ended before it, by a person, "
    "a review, a leaver or a policy) and revoke attempts that failed (outcome failed: retried).",
    ["integration", "outcome"],
)
REVOKE_FAILURES = Counter(
    "lapse_revoke_failures_total",
    "Revokes the target refused for good (a permanent error: retrying will not help until someone acts); the "
    "grant stays revoking and the request shows why.",
    ["integration"],
)
GRANTS = Counter(
    "lapse_grants_total",
    "Grants that took effect (path jit: an approved request; birthright: a policy) or were first found in a "
    "target (external).",
    ["integration", "path"],
)
CONNECTOR_CALL = Histogram(
    "lapse_connector_call_seconds",
    "How long a call to a target system took, by integration and operation (grant, revoke, extend, discover, "
    "list_grants, test_connection), failed calls included.",
    ["integration", "operation"],
    buckets=CALL_BUCKETS,
)
CONNECTOR_ERRORS = Counter(
    "lapse_connector_errors_total",
    "Calls to a target system that failed (unreachable, refused, misconfigured), by integration and operation.",
    ["integration", "operation"],
)
SYNC_RUN = Histogram(
    "lapse_sync_run_seconds",
    "How long a finished run took: kind directory (read the sources, apply joiners, movers, leavers), "
    "birthright (plan to last item) or discovery (one integration read and reconciled).",
    ["kind"],
    buckets=RUN_BUCKETS,
)
SYNC_ITEMS = Histogram(
    "lapse_sync_items",
    "Items a finished run handled: users read (directory), planned changes applied (birthright), grants "
    "listed in the target (discovery).",
    ["kind"],
    buckets=ITEM_BUCKETS,
)
NOTIFICATIONS = Counter(
    "lapse_notifications_sent_total",
    "Notifications handled by the dispatcher, by channel and outcome: sent; skipped (nothing to send it to); "
    "retry (failed, tried again later); failed (given up after its retries: shown on the request, audited).",
    ["channel", "outcome"],
)


def exposition() -> tuple[bytes, str]:
    """This process's metrics in Prometheus's text format, and its content type (for ``/metrics``)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_db_gauges: AppDbGauges | None = None


def register_db_collector(db_url: str) -> None:
    """Serve the app DB's gauges (requests by state, approvals, active grants, revoking, audit chain, discovery,
    outbox) from ``db_url`` on this process's ``/metrics``; call once at start. Called again with another URL (a
    test's fresh app DB), the new one replaces the old."""
    global _db_gauges
    if _db_gauges is not None:
        if _db_gauges.db_url == db_url:
            return
        REGISTRY.unregister(_db_gauges)
    _db_gauges = AppDbGauges(db_url)
    REGISTRY.register(_db_gauges)


# --- recording ------------------------------------------------------------------------------------


def grant_took_effect(integration: str, path: str, count: int = 1) -> None:
    if count > 0:
        GRANTS.labels(integration=integration, path=path).inc(count)


def grant_ended(integration: str, *, expires_at: datetime | None, began_at: datetime | None) -> None:
    """A grant's end confirmed now: an expiry when its end had passed as its revoke began (``began_at``: the
    revoke's first claim), its lag observed; else an early revoke."""
    now = datetime.now(UTC)
    began = began_at or now
    if expires_at is not None and expires_at <= began:
        REVOKES.labels(integration=integration, outcome="expired").inc()
        REVOKE_LAG.labels(integration=integration).observe(max((now - expires_at).total_seconds(), 0.0))
    else:
        REVOKES.labels(integration=integration, outcome="revoked").inc()


def sync_finished(kind: str, started: datetime | None, items: int) -> None:
    """A directory, birthright or discovery run finished (``started``: when it began, timezone-aware)."""
    if started is not None:
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        SYNC_RUN.labels(kind=kind).observe(max((datetime.now(UTC) - started).total_seconds(), 0.0))
    SYNC_ITEMS.labels(kind=kind).observe(items)


def notification_handled(channel: str, outcome: str) -> None:
    NOTIFICATIONS.labels(channel=channel, outcome=outcome).inc()


# --- connector calls --------------------------------------------------------------------------------


class MeteredConnector:
    """A connector whose calls to its target are timed and whose failures are counted (and a failed revoke
    counted as one); everything else is the connector's own. ``activities.connectors.connector_for`` gives
    every activity its connector through this, so every driver is measured alike."""

    def __init__(self, inner: Connector, integration: str) -> None:
        self._inner = inner
        self._integration = integration
        self.discovers = inner.discovers
        self.accounts_by_rule = inner.accounts_by_rule
        self.per_grant_accounts = inner.per_grant_accounts

    def __getattr__(self, name: str) -> Any:  # a driver's own extras (tests' doubles have some)
        return getattr(self._inner, name)

    def account_for(self, email: str) -> str:
        return self._inner.account_for(email)  # no call to the target: not measured

    def test_connection(self) -> str:
        with self._measured("test_connection"):
            return self._inner.test_connection()

    def discover(self) -> Discovery:
        with self._measured("discover"):
            return self._inner.discover()

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> Iterable[HeldRole]:
        with self._measured("list_grants"):
            return list(self._inner.list_grants(roles))  # a lazy listing's calls happen while it is read: read it

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> Credentials | None:
        with self._measured("grant"):
            return self._inner.grant(account, target, expires_at)

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        with self._measured("extend"):
            self._inner.extend(account, target, expires_at)

    def revoke(self, account: str, target: Target) -> None:
        try:
            with self._measured("revoke"):
                self._inner.revoke(account, target)
        except Exception as error:
            REVOKES.labels(integration=self._integration, outcome="failed").inc()
            if isinstance(error, ConnectorError) and not error.retryable:
                REVOKE_FAILURES.labels(integration=self._integration).inc()
            raise

    def _measured(self, operation: str) -> AbstractContextManager[None]:
        return _measured(self._integration, operation)


@contextmanager
def _measured(integration: str, operation: str) -> Iterator[None]:
    """Time one call into ``lapse_connector_call_seconds``; one that raises counts in ``..._errors_total``."""
    began = time.perf_counter()
    try:
        yield
    except BaseException:
        CONNECTOR_ERRORS.labels(integration=integration, operation=operation).inc()
        raise
    finally:
        CONNECTOR_CALL.labels(integration=integration, operation=operation).observe(time.perf_counter() - began)


def metered(connector: Connector, integration: str) -> Connector:
    """``connector`` with its calls measured under ``integration``'s name."""
    return MeteredConnector(connector, integration)
