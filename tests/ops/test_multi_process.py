"""Lapse run as a company runs it: 3 ``lapse worker`` and 2 ``lapse api`` processes against one Temporal server and
one fresh PostgreSQL app DB, started at once as an operator would (the same settings through the environment, each
its own port; each migrates at start, so the five race for the migration lock). 200 lifecycles (request → the
requester's manager approves → granted in the ledger → expires after a few seconds → revoked) are spread over both
APIs; one worker is SIGKILLed and one API stopped (SIGTERM) mid-way. Then, what a user or an operator would see:
every request expired (none stuck, no run left open), each granted once and revoked at most 5 s after its expiry
(the ledger), the audit log intact, every live process ready, and the metrics each process serves add up.

When the disruptions come, so that the counters can be summed exactly (a SIGKILLed process takes its counts with
it; the counters are per process, sums over processes as Prometheus's ``sum()`` takes them):

- **worker-1 is SIGKILLed half-way through the submissions**, while requests are being started and recorded on it
  (it holds a third of the runs in its cache; its workflow tasks and local activities under way are lost and
  must be taken over by the others). No request is approved before it dies, so it has made no grant and revoked
  nothing: its scrape just before the kill shows both counters at 0 (asserted), and every grant and revoke is
  counted by the survivors, which are scraped at the end. The survivors carry every run it held to its end.
- **api-2 is stopped half-way through the approvals**, with approvals in flight on it: it lets them finish and
  exits 0; callers then reach api-1 (as behind a load balancer: a refused connection goes to the next API).
  APIs count no grant or revoke; their metrics are the app DB's gauges, the same in every process: read from
  each live process at a moment nothing moves (all requests pending, api-2 included, just before the approvals
  start), and again from the survivors at the end (all expired). api-2's own scrape just before it stops must
  account for every request.

Sums checked at the end: ``lapse_grants_total`` over all processes = 200; ``lapse_revokes_total{outcome="expired"}``
= the requests the app DB holds as expired (200), with no ``revoked`` or ``failed`` outcome; the revoke-lag
histogram counts 200 observations. ``LAPSE_MULTI_PROCESS_LIFECYCLES`` changes the number of lifecycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlmodel import col, select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access.requests import RequestState
from harness.postgres import PostgresServer
from starter.services.org import checked_connector
from store.audit_log import configure_audit
from store.db import engine_for, session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.tables import AccessRequest, AuditEvent, Grant
from tests.conftest import PROXY_AUTH, TEST_CODEC_KEY, clear_sync_schedules, teardown
from tests.ops.multi_process_support import Fleet, Scrape, Traffic, each_with_halfway, fleet, traffic
from tests.ops.processes import answering
from tests.support import eventually

LIFECYCLES = int(os.environ.get("LAPSE_MULTI_PROCESS_LIFECYCLES", "200"))
ROLE = "ledger/payments-api/deploy"
"""Under the demo's ``manager-approval`` workflow: one step, the requester's manager."""
HOLD_SECONDS = 5
LATE = timedelta(seconds=5)
"""The most a grant may outlive its expiry."""
ADMIN = "ada@example.com"
STATES = [state.value for state in RequestState]


@pytest.fixture
def fresh_app_db(postgres: PostgresServer) -> Iterator[str]:
    """An empty database in the session's PostgreSQL cluster (not migrated: the processes do it as they start)."""
    name = f"lapse_multi_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/{name}"
    yield url
    for engine in (engine_for(url), engine_for(url, writer=True), engine_for(url, writer=False)):
        engine.dispose()
    engine_for.cache_clear()
    with teardown(f"dropping the app DB {name}"), psycopg.connect(postgres.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def task_queue(env: WorkflowEnvironment) -> AsyncIterator[str]:
    """The test's task queue; afterwards no schedule points at it and no run is left on it (after a failure)."""
    queue = f"multi-{uuid.uuid4().hex[:8]}"
    yield queue
    await clear_sync_schedules(env.client)  # each API made them at start, pointing at this queue
    with teardown("ending the runs left on the test's queue"):
        async for run in env.client.list_workflows(f'TaskQueue = "{queue}" AND ExecutionStatus = "Running"'):
            with contextlib.suppress(RPCError):
                await env.client.get_workflow_handle(run.id, run_id=run.run_id).terminate("the test is over")


async def test_three_workers_and_two_apis_carry_every_lifecycle_through_a_killed_worker_and_a_stopped_api(
    env: WorkflowEnvironment, fresh_app_db: str, task_queue: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_app_db,
        temporal_address=env.client.service_client.config.target_host,
        task_queue=task_queue,
        **{"codec_key": TEST_CODEC_KEY, **PROXY_AUTH},
    )
    token = f"scrape-{uuid.uuid4().hex}"
    began = time.monotonic()
    with fleet(settings, tmp_path, workers=3, apis=2, LAPSE_METRICS_TOKEN=token) as processes:
        try:
            timings = await _run(env, settings, processes)
        except BaseException:
            print(processes.logs())  # shown with the failure
            raise
    timings["total"] = time.monotonic() - began
    print("multi-process test, seconds:", json.dumps({k: round(v, 1) for k, v in timings.items()}))


async def _run(env: WorkflowEnvironment, settings: Settings, processes: Fleet) -> dict[str, float]:
    timings: dict[str, float] = {}
    mark = time.monotonic()
    await processes.ready()
    timings["start"] = time.monotonic() - mark
    lines = [line for running, _url in processes.everyone for line in _json_lines(running.log)]
    migrating = [line for line in lines if str(line.get("msg", "")).startswith("migrating the app DB")]
    assert len(migrating) == 1, migrating  # one migrated; the four others waited for its lock, then found it done

    org = OrgFile.read(DEMO_ORG).model_copy(update={"notifications": None})  # nobody is mailed from a test
    configure_audit(settings)  # the audit key the processes share (in the data dir)
    with session_scope(settings.db_url) as session:
        load_org(session, org, connectors=checked_connector)
    manager = {user.email: user.manager for user in org.users if user.manager}
    requesters = [list(manager)[n % len(manager)] for n in range(LIFECYCLES)]
    doomed_worker, stopping_api = 0, 1
    scrapes: dict[str, Scrape] = {}
    ids: list[str | None] = [None] * LIFECYCLES
    problems: list[str] = []

    async with traffic(processes.api_urls) as calls:
        # 1. The requests, spread over both APIs; worker-1 dies half-way.
        async def submit(n: int, requester: str) -> None:
            body = {"role": ROLE, "duration": HOLD_SECONDS, "justification": "multi-process test"}
            outcome = await calls.call(n % 2, requester, "POST", "/api/requests", body)
            if outcome.response.status_code in (201, 503) and "id" in outcome.body():
                ids[n] = str(outcome.body()["id"])  # 503 with an id: started, recorded a moment later
            else:
                problems.append(f"request {n} as {requester}: {outcome.response.status_code} {outcome.response.text}")

        async def kill_worker() -> None:
            worker, url = processes.workers[doomed_worker], processes.worker_urls[doomed_worker]
            scrapes[worker.name] = await processes.scrape(url)  # its counts, final: it dies the next moment
            worker.process.kill()
            worker.process.wait()

        mark = time.monotonic()
        await each_with_halfway(requesters, submit, kill_worker)
        timings["submit"] = time.monotonic() - mark
        assert not problems, problems
        killed = scrapes[processes.workers[doomed_worker].name]
        assert killed.total("lapse_grants_total") == 0 and killed.total("lapse_revokes_total") == 0
        assert killed.total("temporal_sticky_cache_size") > 0, "worker-1 held no run when it was killed"
        request_ids = [request_id for request_id in ids if request_id is not None]
        assert len(set(request_ids)) == LIFECYCLES

        # 2. All pending, nothing moving: every live process's gauges say so (api-2's too, before it stops).
        await _states_become(settings, request_ids, {RequestState.PENDING.value: LIFECYCLES}, within=120)
        for running, url in processes.live():
            scrapes[running.name] = await _gauges_settle(processes, url, RequestState.PENDING.value)
            assert scrapes[running.name].total("lapse_pending_approvals") == LIFECYCLES, running.name
        await eventually(
            lambda: _open_runs(env, settings), until=lambda runs: len(runs) == LIFECYCLES, what="a run per request"
        )

        # 3. The managers approve, over both APIs; api-2 is stopped half-way.
        async def approve(n: int, request_id: str) -> None:
            approver = manager[requesters[n]]
            assert approver is not None
            path = f"/api/requests/{request_id}/approve"
            outcome = await calls.call(n % 2, approver, "POST", path, {"comment": "multi-process test"})
            if outcome.response.status_code == 200:
                return
            if outcome.response.status_code == 409 and outcome.ambiguous and _decided(outcome.body()):
                # An earlier attempt (cut off by the stopping API, or answered 503 when Temporal was slow to
                # confirm) was carried out after all. That it led to a grant is checked below: every request expires.
                calls.notes.append(f"approve {request_id}: {outcome.body().get('detail')}")
                return
            problems.append(f"approve {request_id}: {outcome.response.status_code} {outcome.response.text[:300]}")

        async def stop_api() -> None:
            api, url = processes.apis[stopping_api], processes.api_urls[stopping_api]
            last = await processes.scrape(url)
            assert sum(last.by("lapse_requests", "state").values()) == LIFECYCLES  # one whole read of the app DB
            calls.stopping.add(stopping_api)
            assert await asyncio.to_thread(api.stop) == 0, api.log.read_text()[-3000:]

        mark = time.monotonic()
        await each_with_halfway(request_ids, approve, stop_api)
        timings["approve"] = time.monotonic() - mark
        assert not problems, problems

        # 4. Every grant expires and is revoked, by the workers still there.
        mark = time.monotonic()
        await _states_become(settings, request_ids, {RequestState.EXPIRED.value: LIFECYCLES}, within=180)
        timings["expire"] = time.monotonic() - mark
        timings["longest revoke after expiry"] = _check_ledger_and_audit(settings, request_ids)
        await _check_after(env, settings, processes, calls, scrapes)
    print("answers:", dict(calls.answered), *calls.notes, sep="\n")
    return timings


def _check_ledger_and_audit(settings: Settings, request_ids: list[str]) -> float:
    """Every request granted once and revoked once, within ``LATE`` of its expiry; returns the longest of those
    delays (seconds)."""
    with session_scope(settings.db_url, write=False) as session:
        requests = {row.id: row.state for row in session.exec(select(AccessRequest))}
        grants = list(session.exec(select(Grant).where(col(Grant.request_id).in_(request_ids))))
        events = Counter(
            (event.target.removeprefix("access-request-"), event.action)
            for event in session.exec(
                select(AuditEvent).where(col(AuditEvent.action).in_(["grant.provisioned", "grant.expired"]))
            )
        )
    assert set(requests) == set(request_ids)  # no request made twice by a retried call either
    per_request = Counter(grant.request_id for grant in grants)
    assert per_request == Counter(request_ids), "a request with no grant, or with two"
    still_held = [grant.request_id for grant in grants if grant.active]
    assert still_held == []
    ends = {grant.request_id: (grant.expires_at, grant.ended_at) for grant in grants}
    never = [request_id for request_id, (expires, ended) in ends.items() if expires is None or ended is None]
    assert never == [], "grants with no end"
    late = {r: (e - x).total_seconds() for r, (x, e) in ends.items() if x and e and e > x + LATE}
    assert late == {}, f"grants held more than {LATE.total_seconds():g} s past their expiry: {late}"
    early = [r for r, (x, e) in ends.items() if x and e and e < x]
    assert early == [], "grants revoked before their expiry"
    twice = {key: times for key, times in events.items() if times != 1}
    assert twice == {} and len(events) == 2 * len(request_ids), twice
    return max((e - x).total_seconds() for x, e in ends.values() if x and e)


async def _check_after(
    env: WorkflowEnvironment, settings: Settings, processes: Fleet, calls: Traffic, scrapes: dict[str, Scrape]
) -> None:
    """The survivors are ready, no run is open, the audit log is intact, and the metrics add up."""
    survivors = processes.live()
    assert [r.name for r, _ in survivors] == ["worker-2", "worker-3", "api-1"]
    for running, url in survivors:
        await answering(f"{url}/readyz", running)
        scrapes[running.name] = await _gauges_settle(processes, url, RequestState.EXPIRED.value)
    final = [scrapes[name] for name in ("worker-1", "worker-2", "worker-3", "api-1")]  # api-2: counts nothing

    assert sum(s.total("lapse_grants_total", path="jit", integration="ledger") for s in final) == LIFECYCLES
    assert sum(s.total("lapse_grants_total") for s in final) == LIFECYCLES
    expired = sum(s.total("lapse_revokes_total", outcome="expired") for s in final)
    assert expired == LIFECYCLES  # = the requests the app DB holds as expired (checked before)
    assert sum(s.total("lapse_revokes_total", outcome="revoked") for s in final) == 0
    assert sum(s.total("lapse_revokes_total", outcome="failed") for s in final) == 0
    assert sum(s.total("lapse_revoke_lag_seconds_count") for s in final) == LIFECYCLES
    for running, _url in survivors:
        scrape = scrapes[running.name]
        assert scrape.total("lapse_app_db_up") == 1
        assert scrape.total("lapse_active_grants") == 0 and scrape.total("lapse_revoking_requests") == 0
        assert scrape.total("lapse_pending_approvals") == 0
    for name in ("worker-2", "worker-3"):
        assert scrapes[name].total("lapse_grants_total") > 0, f"{name} made no grant: the work was not spread"

    await eventually(lambda: _open_runs(env, settings), until=lambda runs: runs == [], what="every run to end")
    verified = await calls.call(0, ADMIN, "GET", "/api/audit/verify")
    assert verified.response.status_code == 200 and verified.response.json()["intact"], verified.response.text


def _decided(problem: dict[str, Any]) -> bool:
    """Whether a 409's problem says the decision sent is in already (``access.approval``'s refusals)."""
    detail = str(problem.get("detail", ""))
    return any(said in detail for said in ("has already decided", "nothing is awaiting", "has the approvals it needs"))


async def _open_runs(env: WorkflowEnvironment, settings: Settings) -> list[str]:
    """The requests' runs still open on the test's queue (as Temporal's visibility has them, a moment late)."""
    query = f'TaskQueue = "{settings.task_queue}" AND ExecutionStatus = "Running"'
    return [run.id async for run in env.client.list_workflows(query) if run.id.startswith("access-request-")]


async def _states_become(settings: Settings, request_ids: list[str], wanted: dict[str, int], *, within: float) -> None:
    def states() -> dict[str, int]:
        with session_scope(settings.db_url, write=False) as session:
            rows = session.exec(select(AccessRequest.state).where(col(AccessRequest.id).in_(request_ids)))
            return dict(Counter(rows))

    await eventually(
        states, until=lambda seen: seen == wanted, what=f"the requests to be {wanted}", within=within, every=0.5
    )


async def _gauges_settle(processes: Fleet, url: str, state: str) -> Scrape:
    """``url``'s scrape once its app-DB gauges (cached for a few seconds) show every request in ``state``; they then
    agree with every other process's."""
    wanted = {s: float(LIFECYCLES if s == state else 0) for s in STATES}
    scrape: Scrape = await eventually(
        lambda: processes.scrape(url),
        until=lambda scrape: scrape.by("lapse_requests", "state") == wanted,
        what=f"{url}/metrics to count every request {state}",
        within=30,
        every=0.5,
    )
    return scrape


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a killed process's last line may be cut short
            lines.append(json.loads(line))
    return lines
