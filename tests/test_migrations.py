"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL; the sign-in
migration (0009) comes and goes without losing anyone, and the approvals inbox (0010) starts with every
decision already waiting."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, select

import store.tables  # noqa: F401  (the tables, on SQLModel.metadata)
from access.requests import ExtensionStatus, RequestState, RequestStatus, StepState, StepStatus
from access.types import Approver, ApproverKind
from starter.services import requests
from store.db import MIGRATIONS, engine_for, migrate, session_scope
from store.settings import Settings
from store.tables import AccessRequest, ApprovalInbox, Grant, User


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


@pytest.mark.every_app_db
def test_the_migrated_schema_is_the_declared_one(app_db: str) -> None:
    migrate(app_db)
    with engine_for(app_db).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


@pytest.mark.every_app_db
def test_the_sign_in_migration_goes_down_and_up_keeping_everyone(app_db: str) -> None:
    migrate(app_db)
    engine = engine_for(app_db)
    with engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO "user" (email, name, active, is_admin, source, kind) '
                "VALUES ('ci@example.com', 'CI', true, false, 'service-account', 'service')"
            )
        )
    command.downgrade(_config(app_db), "0008")
    engine.dispose()
    tables = set(inspect(engine).get_table_names())
    assert "websession" not in tables and "apitoken" not in tables
    command.upgrade(_config(app_db), "head")
    engine.dispose()
    with engine.connect() as connection:
        users = connection.execute(text('SELECT email, kind, active FROM "user"')).all()
    # 0008 knew no service accounts: it comes back as a person, who may not sign in.
    assert [tuple(user) for user in users] == [("ci@example.com", "person", False)]
    assert {"websession", "apitoken"} <= set(inspect(engine).get_table_names())


def _waiting(request_id: str, state: RequestState, eligible: list[str], extension: bool = False) -> AccessRequest:
    """A request as its workflow recorded it, its open step (or its pending extension's) decided by ``eligible``."""
    now = datetime.now(UTC)
    step = StepStatus(
        name="manager",
        approvers=[Approver(kind=ApproverKind.MANAGER)],
        quorum=1,
        eligible=eligible,
        state=StepState.OPEN,
        opened_at=now,
    )
    status = RequestStatus(
        id=request_id,
        requester="alan@example.com",
        role="ledger/payments-api/deploy",
        duration=timedelta(hours=1),
        justification="before the inbox",
        policy="manager-approval",
        rule="manager",
        state=state,
        created_at=now,
        steps=[] if extension else [step],
        extensions=[
            ExtensionStatus(
                duration=timedelta(hours=1), justification="more", requested_at=now, rule="manager", steps=[step]
            )
        ]
        if extension
        else [],
    )
    return AccessRequest(
        id=request_id,
        requester=status.requester,
        role=status.role,
        state=state.value,
        created_at=now,
        status=status.model_dump(mode="json"),
    )


@pytest.mark.every_app_db
def test_the_inbox_migration_fills_the_inbox_with_what_already_waits(app_db: str, tmp_path: Path) -> None:
    migrate(app_db)
    command.downgrade(_config(app_db), "0009")
    engine_for(app_db).dispose()
    assert "approvalinbox" not in set(inspect(engine_for(app_db)).get_table_names())
    with session_scope(app_db) as session:
        session.add(_waiting("pending-one", RequestState.PENDING, ["linus@example.com", "alan@example.com"]))
        session.add(_waiting("extending", RequestState.ACTIVE, ["linus@example.com"], extension=True))
        session.add(_waiting("denied-one", RequestState.DENIED, ["linus@example.com"]))
    command.upgrade(_config(app_db), "head")
    engine_for(app_db).dispose()
    with session_scope(app_db, write=False) as session:
        rows = session.exec(select(ApprovalInbox.request_id, ApprovalInbox.approver)).all()
    # The requester (alan) never decides their own request; a denied one awaits nobody.
    assert sorted(tuple(row) for row in rows) == [
        ("extending", "linus@example.com"),
        ("pending-one", "linus@example.com"),
    ]
    settings = Settings(data_dir=tmp_path, database_url=app_db)
    linus = User(email="linus@example.com")
    waiting = requests.awaiting_decision(settings, linus)
    assert sorted(status.id for status in waiting.requests) == ["extending", "pending-one"]


def test_the_inbox_migration_depends_on_no_code_of_lapses() -> None:
    """A migration runs as it was written: one importing Lapse's code would change whenever that code does."""
    source = (MIGRATIONS / "versions" / "0010_approval_inbox.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - sys.stdlib_module_names <= {"sqlalchemy", "alembic"}, imported


@pytest.mark.every_app_db
def test_the_inbox_migration_leaves_out_who_decided_and_who_approved_another_step(app_db: str) -> None:
    """Two steps, distinct approvers: margaret approved the first, so the open second is linus's alone; a step
    whose quorum is met waits for nobody; a status no model reads waits for nobody either."""
    migrate(app_db)
    command.downgrade(_config(app_db), "0009")
    engine_for(app_db).dispose()
    both = ["linus@example.com", "margaret@example.com"]
    two_steps = _waiting("two-steps", RequestState.PENDING, both)
    first = {**two_steps.status["steps"][0], "name": "first", "state": "approved", "eligible": both}
    first["decisions"] = [
        {"approver": "margaret@example.com", "approved": True, "comment": "", "at": "2026-12-01T09:00:00Z"}
    ]
    two_steps.status = {**two_steps.status, "steps": [first, {**two_steps.status["steps"][0], "eligible": both}]}
    met = _waiting("quorum-met", RequestState.PENDING, both)
    met.status = {**met.status, "steps": [{**met.status["steps"][0], "decisions": first["decisions"]}]}
    unreadable = _waiting("unreadable", RequestState.PENDING, both)
    unreadable.status = {"steps": "not a list of steps"}
    with session_scope(app_db) as session:
        session.add_all([two_steps, met, unreadable])
    command.upgrade(_config(app_db), "head")
    engine_for(app_db).dispose()
    with session_scope(app_db, write=False) as session:
        rows = session.exec(select(ApprovalInbox.request_id, ApprovalInbox.approver)).all()
    assert sorted(tuple(row) for row in rows) == [("two-steps", "linus@example.com")]


@pytest.mark.every_app_db
def test_the_warning_scan_migration_keeps_the_warnings_runs_gave_before_it(app_db: str) -> None:
    """A grant whose run warned of its current end is not warned again by the scan; one warned of an end an
    extension has since moved, or never warned, still is."""
    migrate(app_db)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=8)  # grants already ended are left alone
    with session_scope(app_db) as session:
        for request_id, warned_for in (("warned", end), ("moved", end - timedelta(hours=1)), ("unwarned", None)):
            row = _waiting(request_id, RequestState.ACTIVE, [])
            row.status = {**row.status, "warned_for": warned_for.isoformat() if warned_for else None}
            session.add(row)
            session.add(
                Grant(account="alan", role="ledger/x/read", request_id=request_id, granted_at=end - timedelta(hours=8))
            )
        for grant in session.exec(select(Grant)):
            grant.expires_at = end
    command.downgrade(_config(app_db), "0017")
    engine_for(app_db).dispose()
    command.upgrade(_config(app_db), "head")
    engine_for(app_db).dispose()
    with session_scope(app_db, write=False) as session:
        warned = {grant.request_id: grant.warned_for for grant in session.exec(select(Grant))}
    assert warned == {"warned": end, "moved": None, "unwarned": None}
