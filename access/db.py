"""The app DB's one engine and session factory, its migrations, and the audit log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy import event as sa_event
from sqlmodel import Session, col, select

from access.tables import AuditEvent
from access.types import AuditEntry

MIGRATIONS = Path(__file__).parent / "migrations"


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
    with Session(engine_for(url, writer=write), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock(session: Session, *keys: str, shared: bool = False) -> None:
    """Serialise writers on a key until the transaction ends (a no-op beyond SQLite's lock).

    ``shared`` holders run alongside each other but not alongside an exclusive holder.
    """
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b("\x00".join(keys).encode(), digest_size=8).digest()
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {function}(:key)"), {"key": int.from_bytes(digest, "big", signed=True)})


def migrate(url: str) -> None:
    """Bring the app DB schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")


# --- audit ----------------------------------------------------------------------------------


def _digest(prev_hash: str, event: AuditEvent | dict[str, Any]) -> str:
    row = event if isinstance(event, dict) else event.model_dump()
    body = json.dumps(
        [
            row["id"],
            row["at"].astimezone(UTC).isoformat(),
            row["actor"],
            row["action"],
            row["target"],
            row["reason"],
            row["details"],
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append_audit(session: Session, entries: list[AuditEntry]) -> None:
    """Append events to the hash-chained audit log inside the caller's transaction."""
    if not entries:
        return
    lock(session, "audit")
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    prev_hash = last.hash if last else ""
    next_id = (last.id or 0) + 1 if last else 1
    rows: list[dict[str, Any]] = []
    for entry in entries:
        row: dict[str, Any] = {
            "id": next_id,
            "at": entry.at or datetime.now(UTC),
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "reason": entry.reason,
            "details": json.loads(json.dumps(entry.details, default=str)),
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = _digest(prev_hash, row)
        rows.append(row)
        next_id += 1
    # One bulk insert: a directory sync's first run writes tens of thousands of events.
    session.execute(AuditEvent.__table__.insert(), rows)  # type: ignore[attr-defined]


def verify_audit(session: Session) -> int | None:
    """Walk the chain; return the id of the first event that was altered, or None if intact."""
    prev_hash = ""
    expected_id = 1
    for event in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))):
        if event.id != expected_id or event.prev_hash != prev_hash or event.hash != _digest(prev_hash, event):
            return event.id or expected_id
        prev_hash = event.hash
        expected_id += 1
    return None
