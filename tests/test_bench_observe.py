"""The operability benchmarks' own arithmetic (bench.observe, bench.soak): reading a worker's Prometheus text, a
quantile from histogram buckets as Prometheus computes it, the soak's per-grant memory slope, and its organisation
file (which must load, or the soak would fail after minutes of set-up)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bench.lifecycle import Stack
from bench.observe import WriteLockProbe, gauge, histogram, merge, minus, quantile, sqlite_size
from bench.soak import _slope, soak_email, soak_org, soak_role
from store.org import OrgFile

METRICS = """\
# HELP temporal_workflow_task_schedule_to_start_latency_seconds Histogram
# TYPE temporal_workflow_task_schedule_to_start_latency_seconds histogram
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="0.1",namespace="default",task_queue="lapse"} 6.0
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="1.0",namespace="default",task_queue="lapse"} 9.0
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="+Inf",namespace="default",task_queue="lapse"} 10.0
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="0.1",namespace="default",task_queue="sticky"} 4.0
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="1.0",namespace="default",task_queue="sticky"} 4.0
temporal_workflow_task_schedule_to_start_latency_seconds_bucket{le="+Inf",namespace="default",task_queue="sticky"} 4.0
temporal_workflow_task_schedule_to_start_latency_seconds_count{namespace="default",task_queue="lapse"} 10.0
temporal_sticky_cache_size{namespace="default"} 1000.0
temporal_sticky_cache_size_other 5
"""


def test_a_histogram_is_summed_over_its_label_sets() -> None:
    buckets = histogram(METRICS, "temporal_workflow_task_schedule_to_start_latency_seconds")
    assert buckets == {0.1: 10.0, 1.0: 13.0, float("inf"): 14.0}
    assert gauge(METRICS, "temporal_sticky_cache_size") == 1000.0
    assert gauge(METRICS, "temporal_no_such_metric") is None


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 10.0, 1.0: 13.0, float("inf"): 14.0}
    assert quantile(buckets, 0.5) == pytest.approx(0.07)  # rank 7 of 10 in (0, 0.1]
    assert quantile(buckets, 0.9) == pytest.approx(0.1 + 0.9 * (12.6 - 10) / 3)
    assert quantile(buckets, 0.99) == 1.0  # in +Inf: the highest finite bound
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.5) is None


def test_the_change_between_two_scrapes_is_what_was_observed_meanwhile() -> None:
    before = {0.1: 5.0, float("inf"): 6.0}
    after = {0.1: 8.0, float("inf"): 10.0}
    assert minus(after, before) == {0.1: 3.0, float("inf"): 4.0}
    assert merge(before, after) == {0.1: 13.0, float("inf"): 16.0}


def test_the_soak_slope_is_bytes_per_grant() -> None:
    samples = [{"created": n, "rss": {"worker": 1000 + 3 * n, "api": 10**9}} for n in (100, 200, 300, 400)]
    assert _slope(samples) == pytest.approx(3.0)


def test_the_soak_organisation_loads_and_holds_every_grants_role(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.use_org(tmp_path / "org.yaml", soak_org(users=30, roles=4))
    assert stack.settings.org_file == tmp_path / "org.yaml", "the stack's first load reads it"
    org = OrgFile.read(tmp_path / "org.yaml")
    emails = {user.email for user in org.users}
    assert soak_email(29) in emails and "alan@example.com" in emails
    roles = {f"{i.name}/{r.name}/{role.name}" for i in org.integrations for r in i.resources for role in r.roles}
    assert soak_role(3) in roles
    assert not org.notifications


def test_the_write_lock_probe_sees_a_held_lock(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    with WriteLockProbe(f"sqlite:///{db}", every=0.01) as probe:
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        time.sleep(0.1)
    assert probe.waits and max(probe.waits) >= 0.1
    assert sqlite_size(db)["total"] >= sqlite_size(db)["db"] > 0
