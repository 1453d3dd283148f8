"""The app DB's one engine and session factory, its write lock, and its migrations (the audit log: store.audit_log)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy import event as sa_event
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def shown_url(url: str) -> str:
    """An app DB URL as it may be printed or logged: without its password (in the URL, or a ``password``
    query parameter, which libpq reads too)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(an app DB URL that cannot be read)"
    return parsed.difference_update_query(["password"]).render_as_string(hide_password=True)


@cache
def engine_for(url: str, *, writer: bool = True) -> Engine:
    """One engine per URL and use. On SQLite (WAL), writers ``BEGIN IMMEDIATE``.

    Immediate transactions serialise writers up front, which the audit hash chain and the
    per-account grant counts rely on (PostgreSQL gets the same from advisory locks); readers
    begin deferred so they never wait for, or hold up, a writer.
    """
    if not url.startswith("sqlite"):
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            # A plain postgresql:// URL means psycopg2 to SQLAlchemy; Lapse ships psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        # Room for every activity thread of a worker (32) to hold a connection at once.
        return create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=32)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa_event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


@contextmanager
def session_scope(url: str, *, write: bool = True) -> Iterator[Session]:
    """A session that commits when the block ends cleanly and rolls back otherwise.

    Keep the block short and never await Temporal inside a writing one: on SQLite it holds
    the database's write lock, which the workflow's own bookkeeping needs.
    """
    queue = _sqlite_writers(url) if write and url.startswith("sqlite") else nullcontext()
    with queue, Session(engine_for(url, writer=write), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@cache
def _sqlite_writers(url: str) -> threading.RLock:
    """The queue a process's SQLite writers wait in.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps, so under load
    the lock sits free while waiters sleep and a burst of writers collapses throughput. Waiting on a
    lock in the process instead hands the database to the next writer as soon as the last commits.
    Re-entrant: a writer may open another writing session in the same thread.
    """
    return threading.RLock()


def lock(session: Session, *keys: str, shared: bool = False) -> None:
    """Serialise writers on a key until the transaction ends (a no-op beyond SQLite's lock).

    ``shared`` holders run alongside each other but not alongside an exclusive holder.
    """
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b("\x00".join(keys).encode(), digest_size=8).digest()
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {function}(:key)"), {"key": int.from_bytes(digest, "big", signed=True)})


MIGRATION_LOCK = "lapse:migrate"
"""The advisory lock (PostgreSQL) every process takes around migrating, so that of several starting at once
one migrates and the others wait, then find the schema current."""


def migrate(url: str) -> None:
    """Bring the app DB schema to the latest Alembic revision; safe from several processes at once.

    PostgreSQL: under a session advisory lock (released by the server if this process dies); SQLite: under an
    exclusive ``flock`` on ``<db>.migrate.lock`` beside the file.
    """
    from alembic import command

    with _migration_lock(url):
        before = schema_revision(url)
        if before == schema_head():
            _current.add(url)
            return
        log.info("migrating the app DB (%s) from %s to %s", shown_url(url), before or "nothing", schema_head())
        command.upgrade(_alembic_config(url), "head")
    _current.add(url)


_current: set[str] = set()
"""App DBs seen at the head revision by this process: a schema never goes back, so ``/readyz`` asks once."""


def schema_current(url: str) -> bool:
    """Whether the app DB's schema is at the latest migration this code knows (asked once it is)."""
    if url in _current:
        return True
    if schema_revision(url) == schema_head():
        _current.add(url)
        return True
    return False


def schema_revision(url: str) -> str | None:
    """The app DB's Alembic revision; None before its first migration."""
    with engine_for(url, writer=False).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@cache
def schema_head() -> str:
    """The latest migration's revision."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations have no head"
    return head


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if not url.startswith("sqlite:///") or path in ("", ":memory:"):
            yield  # an in-memory database belongs to one process
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield
        return
    key = int.from_bytes(hashlib.blake2b(MIGRATION_LOCK.encode(), digest_size=8).digest(), "big", signed=True)
    with engine_for(url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
