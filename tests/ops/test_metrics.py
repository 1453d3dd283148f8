"""Lapse's Prometheus metrics: a real lifecycle on the real Temporal server moves them, the app DB's gauges say
what the DB holds, the Temporal SDK's own metrics are there, and no label ever carries a person."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, delete, select
from temporalio.testing import WorkflowEnvironment

from access.types import AuditEntry
from activities import metrics_db
from activities.audit import latest_checkpoint
from activities.connectors import BUILT_IN
from activities.metrics import exposition, register_db_collector
from starter.api.app import create_app
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Integration, Notification
from store.temporal import connect
from tests.conftest import Api, FakeTarget, clear_sync_schedules
from tests.support import eventually
from worker import build_worker
from workflows.audit import AuditCheckpointWorkflow

READ = "ledger/prod-db/read"  # automatic up to an hour, on the ledger integration (the test's fake target)
KATHERINE = "katherine@example.com"


@pytest.fixture(autouse=True)
def fresh_gauges(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's app DB behind the gauges, read at every scrape (no cache between a change and its check)."""
    monkeypatch.setattr(metrics_db, "CACHE_SECONDS", 0.0)
    register_db_collector(settings.db_url)


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition, parsed with prometheus-client's own text parser: value by sample name and labels."""
    body, content_type = exposition()
    assert content_type.startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(name: str, **labels: str) -> float:
    """A counter or histogram sample of this process (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def gauge(name: str, **labels: str) -> float | None:
    return scrape().get((name, frozenset(labels.items())))


@pytest_asyncio.fixture
async def connected_api(env: WorkflowEnvironment, settings: Settings, target: FakeTarget) -> AsyncIterator[Api]:
    """The API and a worker on a client from ``store.temporal.connect``, as ``lapse api``/``lapse worker`` make
    theirs: its runtime records the Temporal SDK's metrics."""
    client = await connect(settings)
    worker = build_worker(client, settings, connectors={**BUILT_IN, "ledger": target.connector})
    async with worker:
        app = create_app(settings, client=client)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as http:
            yield Api(http)
    await clear_sync_schedules(env.client)


async def test_a_lifecycle_moves_the_revoke_metrics_and_the_gauges_follow_the_db(
    connected_api: Api, settings: Settings
) -> None:
    before = {
        "expired": value("lapse_revokes_total", integration="ledger", outcome="expired"),
        "lag": value("lapse_revoke_lag_seconds_count", integration="ledger"),
        "granted": value("lapse_grants_total", integration="ledger", path="jit"),
        "grant_calls": value("lapse_connector_call_seconds_count", integration="ledger", operation="grant"),
        "revoke_calls": value("lapse_connector_call_seconds_count", integration="ledger", operation="revoke"),
    }
    created = await connected_api.request(KATHERINE, READ, "PT2S", "metrics")
    await connected_api.wait_for(created["id"], "active")
    assert gauge("lapse_requests", state="active") == 1
    assert gauge("lapse_active_grants", path="jit", integration="ledger") == 1
    assert value("lapse_grants_total", integration="ledger", path="jit") == before["granted"] + 1

    await connected_api.wait_for(created["id"], "expired")

    assert value("lapse_revokes_total", integration="ledger", outcome="expired") == before["expired"] + 1
    assert value("lapse_revoke_lag_seconds_count", integration="ledger") == before["lag"] + 1
    assert value("lapse_connector_call_seconds_count", integration="ledger", operation="grant") == (
        before["grant_calls"] + 1
    )
    assert value("lapse_connector_call_seconds_count", integration="ledger", operation="revoke") == (
        before["revoke_calls"] + 1
    )
    samples = scrape()
    assert samples[("lapse_requests", frozenset({("state", "expired")}))] == 1
    assert samples[("lapse_requests", frozenset({("state", "active")}))] == 0
    assert ("lapse_active_grants", frozenset({("path", "jit"), ("integration", "ledger")})) not in samples
    assert samples[("lapse_app_db_up", frozenset())] == 1
    assert samples[("lapse_oldest_revoking_age_seconds", frozenset())] == 0

    # The Temporal SDK's own metrics, from this test's worker, in the same exposition.
    ours = [labels for (name, labels) in samples if ("task_queue", settings.task_queue) in labels]
    names = {name for (name, labels) in samples if ("task_queue", settings.task_queue) in labels}
    assert ours
    assert {
        "temporal_workflow_task_schedule_to_start_latency_seconds_count",
        "temporal_workflow_task_execution_latency_seconds_count",
        "temporal_activity_execution_latency_seconds_count",
        "temporal_sticky_cache_size",
    } <= names

    # Never a person in a label (nor anywhere in the text): only bounded names.
    body = exposition()[0].decode()
    assert KATHERINE not in body
    assert not [labels for (_, labels) in samples for _, label in labels if "@" in label]


@pytest.mark.every_app_db
async def test_a_failed_attempt_and_an_early_revoke_are_counted_apart(api: Api, target: FakeTarget) -> None:
    before = {
        outcome: value("lapse_revokes_total", integration="ledger", outcome=outcome)
        for outcome in ("expired", "revoked", "failed")
    }
    errors = value("lapse_connector_errors_total", integration="ledger", operation="revoke")
    lag = value("lapse_revoke_lag_seconds_count", integration="ledger")
    created = await api.request(KATHERINE, READ, "PT30M", "metrics")
    await api.wait_for(created["id"], "active")
    target.revoke_failures = 1  # the first revoke attempt fails (retryable), the next one succeeds

    await api.ok(KATHERINE, "POST", f"/api/requests/{created['id']}/revoke", {"comment": "done early"})
    await api.wait_for(created["id"], "revoked")

    assert value("lapse_revokes_total", integration="ledger", outcome="failed") == before["failed"] + 1
    assert value("lapse_revokes_total", integration="ledger", outcome="revoked") == before["revoked"] + 1
    assert value("lapse_revokes_total", integration="ledger", outcome="expired") == before["expired"]
    assert value("lapse_revoke_lag_seconds_count", integration="ledger") == lag  # not an expiry: no lag
    assert value("lapse_connector_errors_total", integration="ledger", operation="revoke") == errors + 1
    assert gauge("lapse_requests", state="revoked") == 1


async def test_the_audit_chain_gauge_follows_the_scheduled_checkpoint(
    env: WorkflowEnvironment, settings: Settings, worker: None
) -> None:
    assert gauge("lapse_audit_chain_ok") is None  # never checked: no value rather than a guess

    async def checkpoint() -> Any:
        return await env.client.execute_workflow(
            AuditCheckpointWorkflow.run, id=f"audit-checkpoint-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue
        )

    with session_scope(settings.db_url) as session:
        append_audit(session, [AuditEntry(actor="lapse", action="test.event", target="metrics", at=datetime.now(UTC))])
    first = await checkpoint()
    assert first.seq > 0 and not first.kept
    assert gauge("lapse_audit_chain_ok") == 1
    assert (gauge("lapse_audit_chain_verified_timestamp_seconds") or 0) > 0
    await eventually(  # the next run compares the log with this one's result, once Temporal lists it
        lambda: latest_checkpoint(env.client, settings.task_queue), what="the first checkpoint to be listed"
    )

    with session_scope(settings.db_url) as session:  # someone deletes the newest events
        session.execute(delete(AuditEvent).where(col(AuditEvent.id) >= first.seq))
    second = await checkpoint()

    assert second.kept
    assert gauge("lapse_audit_chain_ok") == 0


@pytest.mark.every_app_db
def test_discovery_and_outbox_gauges_read_the_app_db(settings: Settings) -> None:
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        ledger = session.exec(select(Integration).where(Integration.name == "ledger")).one()
        ledger.discovered_at, ledger.discovery_error = now, "the target refused the connection"
        session.add(ledger)
        for channel in ("email", "email", "slack"):
            session.add(
                Notification(
                    key=uuid.uuid4().hex, channel=channel, kind="granted", subject="r1", due_at=now, created_at=now
                )
            )

    assert gauge("lapse_discovery_failing", integration="ledger") == 1
    assert gauge("lapse_discovery_last_success_timestamp_seconds", integration="ledger") == pytest.approx(
        now.timestamp()
    )
    assert gauge("lapse_notifications_pending", channel="email") == 2
    assert gauge("lapse_notifications_pending", channel="slack") == 1
    assert gauge("lapse_pending_approvals") == 0
