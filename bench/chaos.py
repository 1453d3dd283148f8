"""Chaos suite: many access-request lifecycles against a real PostgreSQL while the stack is broken under them.

Starts its own stack in a temporary directory, as ``lapse run`` does (Temporal dev server with its SQLite
file, ``python -m worker``, the API under uvicorn — restarted when one dies, like ``lapse run``), and its
own throwaway PostgreSQL cluster connected as the ``chaos-pg`` integration (``postgres`` connector, login
roles made on first grant). Then, while requests arrive over HTTP, a driver

- SIGKILLs the worker at random moments (restarting it at once, as ``lapse run`` would), and ``--rekills``
  times kills it again ``--rekill-after`` seconds after its restart, while it works off the backlog;
- restarts the Temporal dev server twice: once with SIGTERM, once with SIGKILL after it hung (SIGSTOP) for
  ``--temporal-hang`` seconds, the worker being SIGKILLed during the hang;
- restarts the API once (SIGKILL);
- breaks PostgreSQL for ``--pg-outage`` seconds: it hangs (SIGSTOP: connections wait, as behind a dead
  network) for ``--pg-hang`` seconds, the worker being SIGKILLed during the hang, then is stopped
  (``pg_ctl -m fast``) for the rest.

Requests mix roles granted automatically (``read-only`` workflow), roles a second person approves over the
API (``manager-approval``; a few are denied), on PostgreSQL and in the built-in ledger; some grants are
given back early. Each is held a few seconds.

At the end, once everything is back, it checks the real target (``pg_auth_members``, sampled all along and
read again at the end), the app DB and Temporal:

- **held past expiry**: no membership is seen more than ``--grace`` seconds after the end of every request
  that could justify it (its expiry, or the early revoke), counting from the end of any disruption that
  covered that moment (recovery); none is left at the end;
- **lost**: every request the API accepted (201, or 503 naming the request) reaches an end state, and so
  does every request the app DB or Temporal knows of; no run is left open;
- **granted twice**: exactly one ``grant.provisioned`` audit event per request that was granted, none for
  one that was not (and, more widely, no once-in-a-lifetime event audited twice: ``ONCE``);
- **audit chain**: ``GET /api/audit/verify`` says intact;
- also (invariant 3) no membership missing while a grant held by Lapse covers it.

Run from the project root::

    .venv/bin/python -m bench.chaos --lifecycles 60 --rate 1.5 --pg-outage 8 --pg-hang 4 --rekills 3   # small
    .venv/bin/python -m bench.chaos --lifecycles 1000 --json bench/results-chaos.json                   # full
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlmodel import col, select

from bench.lifecycle import ADMIN, Stack, api_clients, distribution, project_root
from bench.lifecycle import Api as CountingApi
from harness.postgres import PostgresServer, postgres_bin
from starter.services.org import checked_connector
from starter.stack import port_open, prepare_database, temporal_server_command
from store.codec import codec_keys
from store.db import session_scope
from store.org import OrgFile
from store.org_load import load_org
from store.tables import AccessRequest, AuditEvent, Grant

PG_ENV = "LAPSE_CHAOS_PG_DSN"
INTEGRATION = "chaos-pg"
RESOURCE = "app"
AUTO_PG_ROLES = ("chaos_read_a", "chaos_read_b")
"""``read-only`` workflow: granted without approval for up to an hour."""
APPROVED_PG_ROLES = ("chaos_ops_a", "chaos_ops_b")
"""``manager-approval``: the requester's manager approves."""
AUTO_LEDGER_ROLE = "ledger/prod-db/read"
APPROVED_LEDGER_ROLE = "ledger/payments-api/deploy"
MANAGERS = {
    "grace": "ada",
    "linus": "grace",
    "margaret": "grace",
    "alan": "linus",
    "barbara": "linus",
    "ken": "margaret",
    "dennis": "margaret",
    "frances": "grace",
    "radia": "ada",
    "katherine": "ada",
}
"""The demo organisation's managers (by local part); ada has none, so she only asks for automatic roles."""
DOMAIN = "@example.com"
ENDED = {"expired", "revoked", "denied", "cancelled", "timed_out", "failed"}
ONCE = (
    "request.created",
    "grant.provisioned",
    "grant.expired",
    "grant.revoked",
    "request.denied",
    "request.cancelled",
    "request.failed",
    "request.timed_out",
)
"""Audit actions that happen at most once in a request's life."""
GRANTED_STATES = {"active", "revoking", "expired", "revoked"}


def _now() -> float:
    return time.time()


def _ts(text: Any) -> float | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text.timestamp() if text.tzinfo else text.replace(tzinfo=UTC).timestamp()
    return datetime.fromisoformat(str(text)).timestamp()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# --- the target ------------------------------------------------------------------------------


class ChaosPostgres(PostgresServer):
    """The test suite's throwaway cluster, which the driver can also stop and start again in place."""

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres, str(postgres_bin() / "pg_ctl"), "-D", str(self.dir / "data"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _pids(self) -> list[int]:
        """The postmaster first, then its children (backends and helpers)."""
        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True)
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    def freeze(self) -> None:
        """Hang, as behind a dead network: the kernel still accepts connections, nobody answers them."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def halt(self) -> None:
        """Stopped: every session cut, no new connection accepted. (``-m fast``: after ``immediate`` a busy
        machine's restart sat in crash recovery, "the database system is starting up", for a minute.)"""
        self._pg_ctl("-m", "fast", "stop")

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-l", str(self.dir / "server.log"), "-o", options, "-w", "start")

    def prepare(self) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute("CREATE TABLE IF NOT EXISTS chaos_reports (id serial PRIMARY KEY, body text)")
            for role in (*AUTO_PG_ROLES, *APPROVED_PG_ROLES):
                admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                admin.execute(sql.SQL("GRANT SELECT ON chaos_reports TO {}").format(sql.Identifier(role)))

    def memberships(self) -> set[tuple[str, str]]:
        """Who is a member of which chaos role right now: ``(account, role)``."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=2) as admin:
            rows = admin.execute(
                "SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
                "JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = ANY(%s)",
                ([*AUTO_PG_ROLES, *APPROVED_PG_ROLES],),
            ).fetchall()
        return {(str(member), str(role)) for member, role in rows}


def chaos_org() -> dict[str, Any]:
    roles = [*AUTO_PG_ROLES, *APPROVED_PG_ROLES]
    return {
        "integrations": [
            {
                "name": INTEGRATION,
                "kind": "postgres",
                "description": "the chaos suite's throwaway PostgreSQL",
                "config": {
                    "dsn_env": PG_ENV,
                    "insecure": True,
                    "create_accounts": True,
                    "resource": RESOURCE,
                    "role_prefix": "chaos_",
                },
                "resources": [{"name": RESOURCE, "roles": [{"name": r, "sensitivity": "low"} for r in roles]}],
            }
        ],
        "assignments": [
            *({"workflow": "read-only", "scope": f"{INTEGRATION}/{RESOURCE}/{r}"} for r in AUTO_PG_ROLES),
            *({"workflow": "manager-approval", "scope": f"{INTEGRATION}/{RESOURCE}/{r}"} for r in APPROVED_PG_ROLES),
        ],
    }


# --- the stack, supervised and broken on demand ----------------------------------------------


class ChaosStack(Stack):
    """The benchmark's stack (dev server, worker, API in a temp dir), supervised as ``lapse run`` does —
    a child that dies is started again — and with restarts on demand."""

    def __init__(self, data_dir: Path, pg_dsn: str) -> None:
        super().__init__(data_dir)
        self.pg_dsn = pg_dsn
        self.commands: dict[str, list[str]] = {}
        self.envs: dict[str, dict[str, str] | None] = {}
        """What each process was started with besides the settings (a worker's ops port), for its restart."""
        self.lock = threading.RLock()
        self.restarting: set[str] = set()
        self.unexpected_exits: list[dict[str, Any]] = []
        self._supervising = False
        self._supervisor: threading.Thread | None = None

    def _env(self) -> dict[str, str]:
        return {**super()._env(), PG_ENV: self.pg_dsn}

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with self.lock:
            self.children = [(n, p) for n, p in self.children if n != name]
            self.commands[name] = command
            self.envs[name] = env
            return super()._start(name, command, env)

    def start(self) -> None:
        codec_keys(self.settings)  # made once, before the processes that share it start (as lapse run does)
        prepare_database(self.settings)
        with session_scope(self.settings.db_url) as session:
            load_org(session, OrgFile.model_validate(chaos_org()), connectors=checked_connector)
        super().start()
        self._supervising = True
        self._supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while self._supervising:
            with self.lock:
                for name, process in list(self.children):
                    if process.poll() is not None and name not in self.restarting and self._supervising:
                        self.unexpected_exits.append({"process": name, "code": process.returncode, "at": _now()})
                        self._start(name, self.commands[name], self.envs.get(name))
            time.sleep(0.2)

    def stop(self) -> None:
        self._supervising = False
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        super().stop()

    def process(self, name: str) -> subprocess.Popen[bytes]:
        with self.lock:
            return dict(self.children)[name]

    def polls(self) -> int:
        return self.log("worker").count("worker polling")

    def ready(self, name: str, polls_before: int = 0) -> bool:
        if name == "temporal":
            host, _, port = self.settings.temporal_address.rpartition(":")
            return port_open(host, int(port))
        if name == "worker":
            return self.polls() > polls_before
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        return False

    def restart(self, name: str, *, hard: bool, timeout: float = 120) -> dict[str, Any]:
        """Stop ``name`` (SIGKILL if ``hard``, else SIGTERM), start it again at once, wait until it is ready."""
        with self.lock:
            self.restarting.add(name)
            process = self.process(name)
        try:
            polls = self.polls()
            down = _now()
            if hard:
                process.kill()
            else:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stopped = _now()
            self._start(name, self.commands[name], self.envs.get(name))
        finally:
            with self.lock:
                self.restarting.discard(name)  # from here on, a crash of the new one is the supervisor's
        deadline = time.monotonic() + timeout
        while not self.ready(name, polls):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready {timeout:.0f}s after its restart; see {self.data_dir}")
            time.sleep(0.1)
        return {"down": down, "stopped": stopped, "ready": _now()}


# --- the requests ----------------------------------------------------------------------------


@dataclass
class Lifecycle:
    index: int
    kind: str
    """``pg-auto``, ``pg-approved``, ``ledger-auto`` or ``ledger-approved``."""
    role: str
    requester: str
    duration: int
    approver: str | None = None
    deny: bool = False
    revoke_early: bool = False
    at: float = 0.0
    """Planned arrival, seconds after the start."""

    request_id: str | None = None
    accepted: str | None = None
    """``201`` or ``503`` (started, but not recorded within the submit timeout), or None."""
    create_attempts: int = 0
    ambiguous_creates: int = 0
    """Attempts cut off with no answer (the API died under them): a request may have been made."""
    decision_sent_at: float | None = None
    decision_status: int | None = None
    revoke_sent_at: float | None = None
    revoke_status: int | None = None
    errors: list[str] = field(default_factory=list)

    # from the app DB at the end
    state: str | None = None
    created_at: float | None = None
    granted_at: float | None = None
    expires_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None

    @property
    def account(self) -> str:
        return self.requester.split("@")[0]

    @property
    def pg_role(self) -> str | None:
        return self.role.rsplit("/", 1)[1] if self.kind.startswith("pg") else None

    @property
    def granted(self) -> bool:
        return self.granted_at is not None


def plan(count: int, rate: float, rng: random.Random, revoke_share: float, deny_share: float) -> list[Lifecycle]:
    users = [f"{u}{DOMAIN}" for u in ("ada", *MANAGERS)]
    lifecycles = []
    for index in range(count):
        on_pg = rng.random() < 0.8
        approved = rng.random() < 0.5
        requester = rng.choice([u for u in users if not approved or u.split("@")[0] in MANAGERS])
        if on_pg:
            role = f"{INTEGRATION}/{RESOURCE}/{rng.choice(APPROVED_PG_ROLES if approved else AUTO_PG_ROLES)}"
        else:
            role = APPROVED_LEDGER_ROLE if approved else AUTO_LEDGER_ROLE
        lifecycle = Lifecycle(
            index=index,
            kind=f"{'pg' if on_pg else 'ledger'}-{'approved' if approved else 'auto'}",
            role=role,
            requester=requester,
            duration=rng.randint(2, 6),
            approver=f"{MANAGERS[requester.split('@')[0]]}{DOMAIN}" if approved else None,
            at=index / rate,
        )
        lifecycle.deny = approved and rng.random() < deny_share
        lifecycle.revoke_early = not lifecycle.deny and rng.random() < revoke_share
        lifecycles.append(lifecycle)
    return lifecycles


class Api(CountingApi):
    """The API as a given user (counting every answer, as the lifecycle benchmark does), retrying what the
    chaos breaks."""

    async def retrying(
        self,
        user: str,
        method: str,
        path: str,
        body: Any,
        route: str,
        *,
        deadline: float,
        retry_on: Callable[[httpx.Response], bool] = lambda r: False,
    ) -> tuple[httpx.Response | None, int, int]:
        """Call until a final answer or the deadline: (answer, attempts, attempts cut off with no answer).

        Retried: connection refused (the API is down), answers cut off (it died under the call), 429/502/503/504
        and whatever ``retry_on`` says."""
        attempts = ambiguous = 0
        while True:
            attempts += 1
            delay = 0.5
            try:
                response = await self.call(user, method, path, body, route)
            except httpx.ConnectError:
                response = None
            except httpx.HTTPError:
                response = None
                ambiguous += 1
            if response is not None:
                if response.status_code in (429, 502, 503, 504) or retry_on(response):
                    with contextlib.suppress(ValueError):
                        delay = min(5.0, max(delay, float(response.headers.get("retry-after", delay))))
                else:
                    return response, attempts, ambiguous
            if time.monotonic() + delay > deadline:
                return response, attempts, ambiguous
            await asyncio.sleep(delay)

    async def state(self, request_id: str) -> str | None:
        status = await self.status(request_id)
        return str(status["state"]) if status else None


async def drive(api: Api, record: Lifecycle, begin: float, rng: random.Random, give_up_s: float) -> None:
    await asyncio.sleep(max(0.0, begin + record.at - time.monotonic()))
    deadline = time.monotonic() + give_up_s
    body = {"role": record.role, "duration": record.duration, "justification": "chaos suite"}
    while record.request_id is None and time.monotonic() < deadline:
        response, attempts, ambiguous = await api.retrying(
            record.requester,
            "POST",
            "/api/requests",
            body,
            "/api/requests",
            deadline=deadline,
            retry_on=lambda r: r.status_code == 503 and "id" not in _json(r),
        )
        record.create_attempts += attempts
        record.ambiguous_creates += ambiguous
        if response is None:
            record.errors.append("create: no answer before the deadline")
            return
        if response.status_code == 201:
            record.request_id, record.accepted = response.json()["id"], "201"
        elif response.status_code == 503 and "id" in _json(response):
            record.request_id, record.accepted = str(_json(response)["id"]), "503"
        else:
            record.errors.append(f"create {response.status_code}: {response.text[:200]}")
            return
    if record.request_id is None:
        return
    request_id = record.request_id

    if record.approver is not None:
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        verb = "deny" if record.deny else "approve"
        record.decision_sent_at = _now()
        while True:
            # 404 until a worker records a request the API answered 503 for.
            response, _, _ = await api.retrying(
                record.approver,
                "POST",
                f"/api/requests/{request_id}/{verb}",
                {"comment": "chaos suite"},
                f"/api/requests/{{id}}/{verb}",
                deadline=deadline,
                retry_on=lambda r: r.status_code == 404,
            )
            if response is None or response.status_code != 409 or time.monotonic() > deadline:
                break
            if await api.state(request_id) != "pending":
                break  # decided by an attempt cut off before its answer, or ended: the 409 says so
            await asyncio.sleep(0.5)
        record.decision_status = response.status_code if response is not None else None
        if response is None or response.status_code != 200:
            record.errors.append(f"{verb}: {response.status_code if response else 'no answer'} {_text(response)}")

    if record.revoke_early:
        while time.monotonic() < deadline:  # wait until it is active, then give it back part-way
            state = await api.state(request_id)
            if state == "active" or state in ENDED:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(rng.uniform(0.3, max(0.4, record.duration * 0.6)))
        record.revoke_sent_at = _now()
        response, _, _ = await api.retrying(
            record.requester,
            "POST",
            f"/api/requests/{request_id}/revoke",
            {"comment": "done early"},
            "/api/requests/{id}/revoke",
            deadline=deadline,
        )
        record.revoke_status = response.status_code if response is not None else None
        if response is None or response.status_code not in (200, 409):
            record.errors.append(f"revoke: {response.status_code if response else 'no answer'} {_text(response)}")


def _json(response: httpx.Response) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            return body
    return {}


def _text(response: httpx.Response | None) -> str:
    return "" if response is None else response.text[:200]


# --- the chaos -------------------------------------------------------------------------------


@dataclass
class Disruption:
    kind: str
    """``worker-kill``, ``worker-rekill``, ``temporal-restart``, ``temporal-kill``, ``api-kill`` or ``pg-outage``."""
    start: float
    end: float | None = None
    """When everything it broke answered again (the restarted process ready, PostgreSQL accepting)."""
    detail: str = ""


def chaos_plan(args: argparse.Namespace, window: float, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the start, kind): the fixed events spread over the arrivals, worker kills anywhere."""
    jitter = window * 0.04
    events = [
        (window * 0.2 + rng.uniform(-jitter, jitter), "temporal-restart"),
        (window * 0.38 + rng.uniform(-jitter, jitter), "pg-outage"),
        (window * 0.58 + rng.uniform(-jitter, jitter), "api-kill"),
        (window * 0.8 + rng.uniform(-jitter, jitter), "temporal-kill"),
    ]
    events += [(rng.uniform(window * 0.5, window * 0.97), "worker-rekill") for _ in range(args.rekills)]
    events += [(rng.uniform(window * 0.03, window * 0.97), "worker-kill") for _ in range(args.worker_kills)]
    return sorted(events)


async def run_chaos(
    stack: ChaosStack,
    pg: ChaosPostgres,
    events: Sequence[tuple[float, str]],
    begin: float,
    args: argparse.Namespace,
    done: list[Disruption],
    say: Callable[[str], None],
) -> None:
    """One disruption at a time (each waits for the previous one to recover), at its planned moment or later.

    The target's outage starts with a hang (every PostgreSQL process stopped with SIGSTOP: connections are
    accepted by the kernel and then wait, as behind a dead network) during which the worker is SIGKILLed,
    then PostgreSQL is stopped outright for the rest of the outage."""
    restarts = {
        "worker-kill": ("worker", True),
        "temporal-restart": ("temporal", False),
        "temporal-kill": ("temporal", True),
        "api-kill": ("api", True),
    }

    async def restart(disruption: Disruption, name: str, hard: bool) -> None:
        times = await asyncio.to_thread(stack.restart, name, hard=hard)
        disruption.end = times["ready"]
        disruption.detail = f"stopped after {times['stopped'] - times['down']:.1f}s"

    for at, kind in events:
        await asyncio.sleep(max(0.0, begin + at - time.monotonic()))
        disruption = Disruption(kind=kind, start=_now())
        done.append(disruption)
        say(f"  chaos at {time.monotonic() - begin:5.1f}s: {kind}")
        try:
            if kind == "worker-rekill":  # killed, and killed again as its successor works off the backlog
                await restart(disruption, "worker", True)
                await asyncio.sleep(args.rekill_after)
                again = Disruption(kind="worker-kill", start=_now(), detail="as it worked off the backlog")
                done.append(again)
                say(f"  chaos at {time.monotonic() - begin:5.1f}s: worker-kill again, {args.rekill_after:g}s after")
                await restart(again, "worker", True)
                continue
            if kind == "temporal-kill":  # it hangs first (as behind a dead network); the worker dies meanwhile
                server = stack.process("temporal")
                server.send_signal(signal.SIGSTOP)
                await asyncio.sleep(args.temporal_hang * 0.7)
                kill = Disruption(kind="worker-kill", start=_now(), detail="while Temporal hangs")
                done.append(kill)
                say(f"  chaos at {time.monotonic() - begin:5.1f}s: worker-kill while Temporal hangs")
                killing = asyncio.create_task(restart(kill, "worker", True))
                await asyncio.sleep(args.temporal_hang * 0.3)
                await restart(disruption, "temporal", True)
                disruption.detail = f"hung {args.temporal_hang:g}s, then killed; {disruption.detail}"
                await killing
                continue
            if kind != "pg-outage":
                await restart(disruption, *restarts[kind])
                continue
            hang = min(args.pg_hang, args.pg_outage / 2)
            await asyncio.to_thread(pg.freeze)
            disruption.detail = f"hung {hang:g}s, then stopped"
            await asyncio.sleep(hang * 0.8)
            kill = Disruption(kind="worker-kill", start=_now(), detail="while the target hangs")
            done.append(kill)
            say(f"  chaos at {time.monotonic() - begin:5.1f}s: worker-kill while the target hangs")
            killing = asyncio.create_task(restart(kill, "worker", True))
            await asyncio.sleep(hang * 0.2)
            await asyncio.to_thread(pg.thaw)
            await asyncio.to_thread(pg.halt)
            await asyncio.sleep(args.pg_outage - hang)
            await asyncio.to_thread(pg.resume)
            disruption.end = _now()
            await killing
        except Exception as error:
            disruption.detail = f"{type(error).__name__}: {error}"
            say(f"  chaos {kind} failed: {disruption.detail}")


async def sample_target(
    pg: ChaosPostgres, samples: list[tuple[float, set[tuple[str, str]] | None]], every: float
) -> None:
    """Who holds what in PostgreSQL, all along (None while it cannot be read)."""
    while True:
        started = _now()
        try:
            held: set[tuple[str, str]] | None = await asyncio.to_thread(pg.memberships)
        except psycopg.Error:
            held = None
        samples.append((started, held))
        await asyncio.sleep(max(0.0, every - (_now() - started)))


# --- the checks ------------------------------------------------------------------------------


def recovered(moment: float, disruptions: Iterable[Disruption], now: float, quiet: float) -> float:
    """The moment, or if a disruption covered it, when the stack was back for good: disruptions less than
    ``quiet`` seconds apart count as one (a worker killed again just as it came back had not recovered)."""
    merged: list[list[float]] = []
    for start, end in sorted((d.start, d.end if d.end is not None else now) for d in disruptions):
        if merged and start < merged[-1][1] + quiet:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        if start <= moment < end:
            return end
    return moment


def end_of_right(record: Lifecycle) -> float:
    """When the request stopped justifying access: its expiry or the early revoke it was sent (granted), or
    its end (never granted: a grant made meanwhile must be taken back). Infinite while it has not ended."""
    if record.granted:
        ends = [
            t
            for t in (
                record.expires_at,
                record.revoke_sent_at if record.revoke_status == 200 else None,
                record.ended_at,
            )
            if t
        ]
        if ends:
            return min(ends)
    return record.ended_at if record.ended_at is not None else float("inf")


def check_target(
    records: Sequence[Lifecycle],
    samples: Sequence[tuple[float, set[tuple[str, str]] | None]],
    final: set[tuple[str, str]],
    final_at: float,
    disruptions: Sequence[Disruption],
    provisioned_at: dict[str, float],
    grace: float,
) -> dict[str, Any]:
    """Memberships held past their right (+ grace after recovery), and memberships missing under a grant."""
    by_pair: dict[tuple[str, str], list[Lifecycle]] = defaultdict(list)
    for record in records:
        if record.pg_role and record.created_at is not None:
            by_pair[(record.account, record.pg_role)].append(record)
    deadline = {
        id(r): recovered(end_of_right(r), disruptions, final_at, grace) + grace for rs in by_pair.values() for r in rs
    }
    overdue: dict[tuple[str, str], dict[str, Any]] = {}
    unexplained: dict[tuple[str, str], float] = {}
    for at, held in [*samples, (final_at, final)]:
        for pair in held or ():
            candidates = [r for r in by_pair.get(pair, []) if r.created_at is not None and r.created_at <= at + 1]
            if not candidates:
                unexplained.setdefault(pair, at)
                continue
            if any(at <= deadline[id(r)] for r in candidates):
                continue
            latest = max(candidates, key=lambda r: deadline[id(r)])
            late = at - deadline[id(latest)] + grace
            # Those whose run had not ended yet hold it (their revoke had not happened); else the latest.
            holders = [r for r in candidates if r.ended_at is None or r.ended_at >= at - 0.5] or [latest]
            entry = overdue.setdefault(
                pair,
                {"account": pair[0], "role": pair[1], "first_seen": _iso(at), "request_ids": [], "max_late_s": 0.0},
            )
            entry["max_late_s"] = max(entry["max_late_s"], late)
            entry["last_seen"] = _iso(at)
            for holder in holders:
                if holder.request_id not in entry["request_ids"]:
                    entry["request_ids"].append(holder.request_id)
    missing: list[dict[str, Any]] = []
    for record in records:
        if not record.pg_role or not record.granted or record.request_id not in provisioned_at:
            continue
        start = provisioned_at[record.request_id] + 1.0
        stop = min(end_of_right(record), record.revoke_sent_at or float("inf")) - 1.0  # a revoke cut off may land
        pair = (record.account, record.pg_role)
        gaps = [at for at, held in samples if held is not None and start <= at <= stop and pair not in held]
        if gaps:
            missing.append(
                {"request_id": record.request_id, "pair": list(pair), "first": _iso(gaps[0]), "samples": len(gaps)}
            )
    return {
        "held_past_right": sorted(overdue.values(), key=lambda e: e["first_seen"]),
        "held_at_end": sorted(f"{a}:{r}" for a, r in final),
        "unexplained": {f"{a}:{r}": _iso(at) for (a, r), at in unexplained.items()},
        "missing_under_grant": missing,
        "samples": len(samples),
        "samples_unreadable": sum(1 for _, held in samples if held is None),
    }


def _fill(record: Lifecycle, state: str | None, status: dict[str, Any]) -> None:
    record.state = state
    record.created_at = _ts(status.get("created_at"))
    record.granted_at = _ts(status.get("granted_at"))
    record.expires_at = _ts(status.get("expires_at"))
    record.ended_at = _ts(status.get("ended_at"))
    record.end_reason = status.get("end_reason")


def _kind(role: str) -> str:
    if role.startswith(f"{INTEGRATION}/"):
        return "pg-approved" if role.rsplit("/", 1)[1] in APPROVED_PG_ROLES else "pg-auto"
    return "ledger-approved" if role == APPROVED_LEDGER_ROLE else "ledger-auto"


def read_app_db(stack: ChaosStack, records: Sequence[Lifecycle]) -> dict[str, Any]:
    """Each request's final status, the requests the app DB knows that no driver was told of (made by an
    attempt cut off before its answer), active grants, and the ``grant.provisioned`` events."""
    ours = {r.request_id: r for r in records if r.request_id}
    with session_scope(stack.settings.db_url, write=False) as session:
        rows = session.exec(select(AccessRequest)).all()
        active = session.exec(select(Grant).where(col(Grant.active).is_(True), Grant.path == "jit")).all()
        lifecycle = session.exec(select(AuditEvent).where(col(AuditEvent.action).in_(ONCE))).all()
        known = {row.id: (row.state, dict(row.status)) for row in rows}
        active_grants = [(g.request_id, g.account, g.role, g.phase) for g in active]
        events = [(e.target, _ts(e.at)) for e in lifecycle if e.action == "grant.provisioned"]
        once = Counter((e.target.removeprefix("access-request-"), e.action) for e in lifecycle)
    orphans: list[Lifecycle] = []
    for request_id, (state, status) in known.items():
        record = ours.get(request_id)
        if record is None:
            role = str(status.get("role", ""))
            record = Lifecycle(
                index=-1, kind=_kind(role), role=role, requester=str(status.get("requester", "")), duration=0
            )
            record.request_id = request_id
            orphans.append(record)
        _fill(record, state, status)
    for request_id, record in ours.items():
        if request_id not in known:
            _fill(record, None, {})
    count: Counter[str] = Counter()
    first: dict[str, float] = {}
    for target, at in events:
        request_id = target.removeprefix("access-request-")
        count[request_id] += 1
        if at is not None:
            first[request_id] = min(first.get(request_id, at), at)
    twice: dict[str, list[str]] = defaultdict(list)
    for (request_id, action), times in once.items():
        if times > 1:
            twice[request_id].append(f"{action} x{times}")
    return {
        "orphans": orphans,
        "active_grants": active_grants,
        "provisioned_count": count,
        "provisioned_at": first,
        "audited_twice": dict(twice),
    }


async def open_runs(stack: ChaosStack) -> list[str]:
    from store.temporal import connect

    client = await connect(stack.settings)
    found = []
    async for execution in client.list_workflows('ExecutionStatus = "Running"'):
        if execution.id.startswith("access-request-"):
            found.append(execution.id)
    return found


async def audit_verify(api: Api) -> dict[str, Any]:
    """The audit log's public verification (``GET /api/audit/verify``), as an admin."""
    response = await api.call(ADMIN, "GET", "/api/audit/verify", None, "/api/audit/verify")
    if response.status_code != 200:
        return {"intact": False, "problems": [f"verify answered {response.status_code}: {response.text[:300]}"]}
    body: dict[str, Any] = response.json()
    return body


# --- the run ---------------------------------------------------------------------------------


async def settle(
    stack: ChaosStack, api: Api, ids: Sequence[str], limit_s: float, say: Callable[[str], None]
) -> tuple[float, list[str]]:
    """Wait until every request the app DB knows has ended; returns the time waited and the orphans cancelled.

    An orphan (a request made by an attempt the API answered with an error, unknown to its driver) that still
    waits for a decision is withdrawn by an admin, as one would who finds it in the approvals list."""
    started = time.monotonic()
    ours = set(ids)
    cancelled: list[str] = []

    def states() -> dict[str, str]:
        with session_scope(stack.settings.db_url, write=False) as session:
            return {i: s for i, s in session.exec(select(AccessRequest.id, AccessRequest.state)).all()}

    while True:
        known = await asyncio.to_thread(states)
        left = [i for i in {*ours, *known} if known.get(i) not in ENDED]
        for request_id in left:
            if request_id not in ours and known.get(request_id) == "pending" and request_id not in cancelled:
                cancelled.append(request_id)
                with contextlib.suppress(httpx.HTTPError):
                    await api.call(
                        ADMIN,
                        "POST",
                        f"/api/requests/{request_id}/cancel",
                        {"comment": "orphan"},
                        "/api/requests/{id}/cancel",
                    )
        if not left or time.monotonic() - started > limit_s:
            if left:
                say(f"  {len(left)} request(s) had not ended after {limit_s:.0f}s")
            return time.monotonic() - started, cancelled
        await asyncio.sleep(1.0)


async def chaos(
    stack: ChaosStack, pg: ChaosPostgres, args: argparse.Namespace, say: Callable[[str], None]
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    records = plan(args.lifecycles, args.rate, rng, args.revoke_share, args.deny_share)
    window = args.lifecycles / args.rate
    events = chaos_plan(args, window, rng)
    samples: list[tuple[float, set[tuple[str, str]] | None]] = []
    disruptions: list[Disruption] = []
    async with api_clients(stack.api_url, connections=128) as clients:
        api = Api(clients)
        sampler = asyncio.create_task(sample_target(pg, samples, args.sample_every))
        begin = time.monotonic() + 0.5
        started_at = _now() + 0.5
        say(f"{len(records)} lifecycles over {window:.0f}s; chaos: {', '.join(k for _, k in events)}")
        driver = asyncio.create_task(run_chaos(stack, pg, events, begin, args, disruptions, say))
        await asyncio.gather(*(drive(api, r, begin, random.Random(rng.random()), args.give_up) for r in records))
        arrivals_done = _now()
        say(f"  arrivals done after {arrivals_done - started_at:.0f}s; waiting for the chaos to finish")
        await driver
        recovered_at = _now()
        ids = [r.request_id for r in records if r.request_id]
        say("  everything is back; waiting for every request to end")
        settle_s, cancelled = await settle(stack, api, ids, args.settle, say)
        # The last right ends; give it the grace, then read the target one last time.
        read = await asyncio.to_thread(read_app_db, stack, records)
        last_right = max((end_of_right(r) for r in records if r.request_id), default=_now())
        if last_right != float("inf"):
            await asyncio.sleep(max(0.0, min(last_right, _now()) + args.grace + 0.5 - _now()))
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        final_at = _now()
        final = await asyncio.to_thread(pg.memberships)
        read = await asyncio.to_thread(read_app_db, stack, records)
        verify = await audit_verify(api)
        runs = await open_runs(stack)

    orphans: list[Lifecycle] = read["orphans"]
    target = check_target(
        [*records, *orphans], samples, final, final_at, disruptions, read["provisioned_at"], args.grace
    )
    accepted = [r for r in records if r.accepted]
    lost = [r.request_id for r in [*accepted, *orphans] if r.state not in ENDED]
    count: Counter[str] = read["provisioned_count"]
    made = [(r, count[r.request_id or ""]) for r in [*accepted, *orphans]]
    twice = {r.request_id: n for r, n in made if n > 1}
    unaudited = [r.request_id for r, n in made if r.granted and n == 0]
    ungranted_audited = [r.request_id for r, n in made if not r.granted and n > 0]
    ours = {r.request_id for r in records}
    leftover_grants = [
        {"request_id": g[0], "account": g[1], "role": g[2], "phase": g[3]} for g in read["active_grants"]
    ]
    expired = [r for r in accepted if r.state == "expired" and r.ended_at and r.expires_at]
    early = [r for r in accepted if r.state == "revoked" and r.ended_at and r.revoke_sent_at]
    invariants = {
        "held_past_expiry": len(
            {f"{e['account']}:{e['role']}" for e in target["held_past_right"]} | set(target["held_at_end"])
        ),
        "lost": len(lost) + len([r for r in runs if r.removeprefix("access-request-") not in lost]),
        "granted_twice": len(twice),
        "audited_twice": len(read["audited_twice"]),
        "audit_intact": bool(verify.get("intact")),
        "missing_under_grant": len(target["missing_under_grant"]),
        "granted_unexplained": len(target["unexplained"]),
    }
    ok = (
        invariants["held_past_expiry"] == 0
        and invariants["lost"] == 0
        and invariants["granted_twice"] == 0
        and invariants["audited_twice"] == 0
        and not unaudited
        and not ungranted_audited
        and invariants["audit_intact"]
        and invariants["missing_under_grant"] == 0
        and invariants["granted_unexplained"] == 0
        and not leftover_grants
    )
    return {
        "ok": ok,
        "invariants": invariants,
        "timing": {
            "arrivals_s": arrivals_done - started_at,
            "chaos_done_after_s": recovered_at - started_at,
            "settle_s": settle_s,
            "checked_after_s": final_at - started_at,
        },
        "requests": {
            "planned": len(records),
            "accepted": len(accepted),
            "accepted_503": sum(1 for r in accepted if r.accepted == "503"),
            "not_accepted": [{"index": r.index, "errors": r.errors} for r in records if not r.accepted],
            "create_retries": sum(max(0, r.create_attempts - 1) for r in records),
            "ambiguous_creates": sum(r.ambiguous_creates for r in records),
            "orphans": {r.request_id: r.state for r in orphans},
            "orphans_cancelled": cancelled,
            "orphans_after_error_answer": max(0, len(orphans) - sum(r.ambiguous_creates for r in records)),
            "by_kind": dict(Counter(r.kind for r in records)),
            "final_states": dict(Counter(r.state or "unknown" for r in accepted)),
            "granted": sum(1 for r in accepted if r.granted),
            "revoked_early": len(early),
            "errors": {r.request_id or f"#{r.index}": r.errors for r in records if r.errors},
        },
        "checks": {
            "lost": lost,
            "open_runs": runs,
            "granted_twice": twice,
            "audited_twice": read["audited_twice"],
            "granted_without_event": unaudited,
            "event_without_grant": ungranted_audited,
            "ledger_grants_active_at_end": leftover_grants,
            "leftover_grants_ours": sum(1 for g in leftover_grants if g["request_id"] in ours),
            "audit_verify": verify,
            "target": target,
        },
        "latency": {
            "revoke_lag_after_expiry_s": distribution(
                [r.ended_at - r.expires_at for r in expired if r.ended_at and r.expires_at]
            ),
            "early_revoke_to_end_s": distribution(
                [r.ended_at - r.revoke_sent_at for r in early if r.ended_at and r.revoke_sent_at]
            ),
        },
        "chaos": {
            "disruptions": [
                {
                    "kind": d.kind,
                    "at_s": round(d.start - started_at, 2),
                    "recovered_after_s": round(d.end - d.start, 2) if d.end else None,
                    "detail": d.detail,
                }
                for d in disruptions
            ],
            "unexpected_exits": [{**e, "at_s": round(e["at"] - started_at, 2)} for e in stack.unexpected_exits],
        },
        "http": {"calls": dict(api.calls), "answers": dict(api.errors), "examples": api.examples},
        "records": [asdict(r) for r in [*records, *orphans]],
    }


def named(figures: dict[str, Any]) -> set[str]:
    """The requests some finding names (the JSON keeps only theirs unless ``--all-records``)."""
    checks = figures["checks"]
    ids = {i for entry in checks["target"]["held_past_right"] for i in entry["request_ids"]}
    ids |= {item["request_id"] for item in checks["target"]["missing_under_grant"]}
    ids |= {*checks["lost"], *checks["granted_twice"], *checks["audited_twice"], *figures["requests"]["errors"]}
    ids |= {*checks["granted_without_event"], *checks["event_without_grant"], *figures["requests"]["orphans"]}
    return {str(i) for i in ids}


def report(figures: dict[str, Any]) -> str:
    config, inv, req, timing = figures["config"], figures["invariants"], figures["requests"], figures["timing"]
    checks, lat = figures["checks"], figures["latency"]
    target = checks["target"]

    def verdict(bad: bool) -> str:
        return "VIOLATED" if bad else "ok"

    def dist(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "—"
        return f"p50 {d['p50']:.2f} s, p99 {d['p99']:.2f} s, max {d['max']:.2f} s (n={d['n']})"

    lines = [
        "",
        f"Lapse chaos suite: {config['lifecycles']} lifecycles at {config['rate']:g}/s, seed {config['seed']}",
        f"  {config['temporal']}; {config['cpus']} CPUs; Python {config['python']}; {config['postgres']}",
        f"  arrivals {timing['arrivals_s']:.0f} s, chaos over after {timing['chaos_done_after_s']:.0f} s, "
        f"settled {timing['settle_s']:.0f} s later; whole run {config['wall_s']:.0f} s",
        "  disruptions: "
        + "; ".join(
            f"{d['kind']} at {d['at_s']:.0f}s (back after {d['recovered_after_s']}s)"
            for d in figures["chaos"]["disruptions"]
        ),
        f"  processes that died on their own and were restarted: {len(figures['chaos']['unexpected_exits'])}",
        f"  requests: {req['accepted']}/{req['planned']} accepted ({req['accepted_503']} as 503), "
        f"{req['granted']} granted, {req['revoked_early']} given back early; final states {req['final_states']}",
        f"  create retries {req['create_retries']}; attempts cut off with no answer {req['ambiguous_creates']}; "
        f"requests made by an attempt its driver never learnt of (orphans) {len(req['orphans'])}, "
        f"of which at least {req['orphans_after_error_answer']} after an error answer (not a cut-off)",
        "",
        f"  access held past expiry + {config['grace']:g} s after recovery: {inv['held_past_expiry']}  "
        f"{verdict(inv['held_past_expiry'] > 0)}",
        f"  requests lost (accepted, not ended; open runs):      {inv['lost']}  {verdict(inv['lost'] > 0)}",
        f"  grants made twice (grant.provisioned > 1):           {inv['granted_twice']}  "
        f"{verdict(inv['granted_twice'] > 0)}",
        f"  lifecycle events audited twice (requests):           {inv['audited_twice']}  "
        f"{verdict(inv['audited_twice'] > 0)}",
        f"  audit chain intact:                                  {inv['audit_intact']}  "
        f"{verdict(not inv['audit_intact'])}",
        f"  membership missing under an active grant:            {inv['missing_under_grant']}  "
        f"{verdict(inv['missing_under_grant'] > 0)}",
        f"  membership no request explains:                      {inv['granted_unexplained']}  "
        f"{verdict(inv['granted_unexplained'] > 0)}",
        f"  grants still active in the ledger at the end:        {len(checks['ledger_grants_active_at_end'])}",
        f"  target samples: {target['samples']} ({target['samples_unreadable']} while PostgreSQL was down)",
        f"  revoke lag after expiry: {dist(lat['revoke_lag_after_expiry_s'])}",
        f"  early revoke sent -> ended: {dist(lat['early_revoke_to_end_s'])}",
    ]
    for entry in target["held_past_right"][:20]:
        lines.append(
            f"    held past right: {entry['account']} in {entry['role']} from {entry['first_seen']} "
            f"to {entry.get('last_seen')}, {entry['max_late_s']:.1f} s late; requests {entry['request_ids']}"
        )
    if target["held_at_end"]:
        lines.append(f"    held at the end: {target['held_at_end']}")
    for name in ("lost", "open_runs", "granted_twice", "audited_twice", "granted_without_event", "event_without_grant"):
        if checks[name]:
            lines.append(f"    {name}: {checks[name]}")
    if not inv["audit_intact"]:
        lines.append(f"    audit: {checks['audit_verify'].get('problems')}")
    for item in target["missing_under_grant"][:20]:
        lines.append(f"    missing under grant: {item}")
    answers = figures["http"]["answers"]
    lines.append("  HTTP answers other than 2xx: " + (", ".join(f"{k}: {v}" for k, v in answers.items()) or "none"))
    lines.append(f"  result: {'PASS' if figures['ok'] else 'FAIL'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Run access-request lifecycles against a real PostgreSQL while killing and restarting the "
        "worker, the Temporal dev server, the API and the target; then check no access outlived its expiry, "
        "no request was lost, no grant was made twice and the audit chain is intact.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--lifecycles", type=int, default=1000, help="requests to make")
    parser.add_argument("--rate", type=float, default=4.0, help="requests started per second")
    parser.add_argument("--worker-kills", type=int, default=None, help="SIGKILLs of the worker (default: 1 per 40 s)")
    parser.add_argument("--pg-outage", type=float, default=20.0, help="seconds PostgreSQL is stopped")
    parser.add_argument(
        "--pg-hang", type=float, default=5.0, help="seconds of the outage PostgreSQL hangs (SIGSTOP) first"
    )
    parser.add_argument(
        "--temporal-hang", type=float, default=2.0, help="seconds the dev server hangs (SIGSTOP) before its SIGKILL"
    )
    parser.add_argument(
        "--rekills", type=int, default=1, help="times the worker is killed, then killed again just after its restart"
    )
    parser.add_argument(
        "--rekill-after", type=float, default=1.0, help="seconds after its restart the worker is killed again"
    )
    parser.add_argument("--grace", type=float, default=5.0, help="seconds after expiry (or recovery) access may stay")
    parser.add_argument("--revoke-share", type=float, default=0.2, help="share of grants given back early")
    parser.add_argument("--deny-share", type=float, default=0.05, help="share of approvals that are denials")
    parser.add_argument("--sample-every", type=float, default=0.5, help="seconds between reads of pg_auth_members")
    parser.add_argument("--give-up", type=float, default=120.0, help="seconds a lifecycle's driver keeps retrying")
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to wait for every request to end")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON here")
    parser.add_argument(
        "--all-records", action="store_true", help="keep every request's record in the JSON, not only those named"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.lifecycles < 1 or args.rate <= 0:
        parser.error("--lifecycles must be at least 1 and --rate positive")
    if args.worker_kills is None:
        args.worker_kills = max(2, round(args.lifecycles / args.rate / 40))
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def _version(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip().replace("\n", " ")
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    data_dir = Path(tempfile.mkdtemp(prefix="lapse-chaos-")).resolve()
    pg = ChaosPostgres()
    stack: ChaosStack | None = None
    keep, code, wall = args.keep, 1, time.monotonic()
    try:
        say(f"starting PostgreSQL, the Temporal dev server, worker and API in {data_dir} (seed {args.seed})…")
        pg.start()
        pg.prepare()
        stack = ChaosStack(data_dir, pg.dsn())
        stack.start()
        figures = asyncio.run(chaos(stack, pg, args, say))
        stack.stop()
        figures["log_findings"] = {
            name: {"count": len(lines), "examples": list(dict.fromkeys(lines))[:8]}
            for name, lines in stack.log_findings().items()
        }
        keep = keep or not figures["ok"]
        figures["config"] = {
            "lifecycles": args.lifecycles,
            "rate": args.rate,
            "worker_kills": args.worker_kills,
            "rekills": args.rekills,
            "temporal_hang_s": args.temporal_hang,
            "pg_outage_s": args.pg_outage,
            "pg_hang_s": min(args.pg_hang, args.pg_outage / 2),
            "grace": args.grace,
            "revoke_share": args.revoke_share,
            "deny_share": args.deny_share,
            "seed": args.seed,
            "temporal": _version([temporal_server_command(stack.settings)[0], "--version"]),
            "postgres": _version([str(postgres_bin() / "postgres"), "--version"]),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "wall_s": time.monotonic() - wall,
            "data_dir": str(data_dir) if keep else None,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(report(figures), flush=True)
        if args.json:
            if not args.all_records:
                figures["records"] = [r for r in figures["records"] if r["request_id"] in named(figures)]
            args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
            say(f"figures written to {args.json}")
        code = 0 if figures["ok"] else 2
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    except Exception as error:
        say(f"chaos run failed: {type(error).__name__}: {error}")
        keep, code = True, 1
    finally:
        if stack is not None:
            stack.stop()
        pg.stop()
        if keep:
            say(f"logs kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    root = str(project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # the Temporal client can abort the interpreter at exit (sdk-python #300)
