"""The app DB layer on SQLite and PostgreSQL: the audit chain under concurrent writers, UTC
times, and the database URL a user gives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import col, select

from access.types import AuditEntry
from store.audit_log import append_audit, verify_audit
from store.db import engine_for, migrate, session_scope
from store.settings import get_settings
from store.tables import AuditEvent

pytestmark = pytest.mark.every_app_db


@pytest.fixture
def db_url(app_db: str) -> str:
    migrate(app_db)
    return app_db


def test_concurrent_writers_keep_the_audit_chain_whole(db_url: str) -> None:
    writers, appends = 8, 10
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        start.wait()
        try:
            for i in range(appends):
                with session_scope(db_url) as session:
                    append_audit(session, [AuditEntry(actor=f"writer-{n}", action="test.append", target=str(i))])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with session_scope(db_url, write=False) as session:
        ids = list(session.exec(select(AuditEvent.id).order_by(col(AuditEvent.id))))
        assert ids == list(range(1, writers * appends + 1))
        assert verify_audit(session) is None


def test_times_are_stored_and_read_back_in_utc(db_url: str) -> None:
    at = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(db_url) as session:
        append_audit(session, [AuditEntry(at=at, actor="ada@example.com", action="test.time", target="x")])
    with session_scope(db_url, write=False) as session:
        event = session.exec(select(AuditEvent)).one()
        assert event.at == at and event.at.tzinfo == UTC
        assert verify_audit(session) is None  # the hash covers the time, to the microsecond


@pytest.mark.parametrize("url", ["postgresql://lapse@db:5432/lapse", "postgres://lapse:pw@db/lapse"])
def test_a_plain_postgresql_url_uses_the_installed_driver(url: str) -> None:
    assert engine_for(url).dialect.driver == "psycopg"


WRITER = """
import sys
from access.types import AuditEntry
from store.audit_log import append_audit
from store.db import session_scope
for i in range(int(sys.argv[3])):
    with session_scope(sys.argv[1]) as session:
        append_audit(session, [AuditEntry(actor=sys.argv[2], action="test.append", target=str(i))])
"""


def test_writers_in_several_processes_keep_the_audit_chain_whole(db_url: str) -> None:
    processes, appends = 3, 20
    data_dir = str(get_settings().data_dir)  # this process's audit key (a SQLite file's: the one beside it)
    environment = {**os.environ, "LAPSE_DATA_DIR": data_dir, "PYTHONPATH": str(Path(__file__).parent.parent)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, db_url, f"process-{n}", str(appends)], env=environment)
        for n in range(processes)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * processes
    with session_scope(db_url, write=False) as session:
        actors = list(session.exec(select(AuditEvent.actor).where(AuditEvent.action == "test.append")))
        assert sorted(actors) == sorted(f"process-{n}" for n in range(processes) for _ in range(appends))
        assert verify_audit(session) is None
