"""The audit log is tamper-evident against whoever can write the app DB (issue 8, finding 10), and a caller
repeating a refused call cannot flood it (finding 15, audit spam).

Each event is MACed with a key outside the DB and chained to the previous one; the chain's head is
checkpointed outside the DB, so editing, forging and deleting events — the newest ones and all of
them included — is reported with where it happened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from access.checkpoint import AuditCheckpoint
from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.api.app import create_app
from starter.services.audit import refused
from starter.services.org import checked_connector
from store.audit import HEAD_FILE, KEY_FILE, AuditKeyError, audit_config, generate_key
from store.audit_log import append_audit, audit_report, configure_audit, flush_refusals, verify_audit
from store.db import MIGRATIONS, migrate, session_scope
from store.org import DEMO_ORG, OrgFile
from store.org_load import load_org
from store.settings import Settings
from store.tables import AuditEvent
from tests.conftest import PROXY_AUTH, make_settings
from tests.support import eventually
from worker import build_worker
from workflows.audit import AuditCheckpointWorkflow

KEY_A = "a1:" + base64.b64encode(b"A" * 32).decode()
KEY_B = "b2:" + base64.b64encode(b"B" * 32).decode()


def _settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    settings = Settings(data_dir=tmp_path, database_url=url, **{**PROXY_AUTH, **overrides})
    configure_audit(settings)
    return settings


@pytest.fixture
def settings(app_db: str, tmp_path: Path) -> Settings:
    migrate(app_db)
    return _settings(tmp_path, app_db)


def _append(settings: Settings, count: int, actor: str = "ada@example.com") -> None:
    for n in range(count):
        with session_scope(settings.db_url) as session:
            append_audit(session, [AuditEntry(actor=actor, action="test.event", target=f"t{n}", reason=f"r{n}")])


def _report(settings: Settings) -> Any:
    with session_scope(settings.db_url, write=False) as session:
        return audit_report(session)


def _sql(settings: Settings, statement: str, **params: Any) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(text(statement), params)


def _unkeyed_chain(settings: Settings, *, first: int = 1, upto: int | None = None, drop_key_id: bool = False) -> None:
    """What an attacker with DB access did to the old scheme: recompute the SHA-256 links from an edit on."""
    with session_scope(settings.db_url) as session:
        before = session.get(AuditEvent, first - 1)
        prev = before.hash if before else ""
        query = select(AuditEvent).where(col(AuditEvent.id) >= first).order_by(col(AuditEvent.id))
        if upto is not None:
            query = query.where(col(AuditEvent.id) <= upto)
        for event in session.exec(query).all():
            body = json.dumps(
                [
                    event.id,
                    event.at.astimezone(UTC).isoformat(),
                    event.actor,
                    event.action,
                    event.target,
                    event.reason,
                    event.details,
                ],
                sort_keys=True,
                default=str,
            )
            digest = hashlib.sha256((prev + body).encode()).hexdigest()
            key_clause = ", key_id = ''" if drop_key_id else ""
            session.execute(
                text(f"update auditevent set prev_hash = :prev, hash = :hash{key_clause} where id = :id"),
                {"prev": prev, "hash": digest, "id": event.id},
            )
            prev = digest


# --- finding 10: a keyed, anchored chain ------------------------------------------------------------


@pytest.mark.every_app_db
def test_f10_deleting_newest_events_is_detected(settings: Settings) -> None:
    _append(settings, 5)
    assert verify_audit_intact(settings)
    _sql(settings, "delete from auditevent where id > 3")

    report = _report(settings)
    assert not report.intact
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", 4)]
    assert "events after 3 are missing: the checkpoint says the log reached 5" in report.problems[0].detail


@pytest.mark.every_app_db
def test_f10_deleting_every_event_is_detected(settings: Settings) -> None:
    _append(settings, 4)
    _sql(settings, "delete from auditevent")

    report = _report(settings)
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", 1)]
    assert "all 4 events are missing" in report.problems[0].detail


@pytest.mark.every_app_db
def test_f10_edited_event_with_recomputed_unkeyed_hash_is_detected(settings: Settings) -> None:
    _append(settings, 5)
    _sql(settings, "update auditevent set reason = 'nothing to see' where id = 2")
    _unkeyed_chain(settings, first=2)

    report = _report(settings)
    assert report.first_broken == 2
    assert report.problems[0].kind == "altered" and "event 2 was altered" in report.problems[0].detail


def test_f10_events_rewritten_as_unkeyed_legacy_events_are_detected(settings: Settings) -> None:
    """Turning the whole log back into the old unkeyed scheme does not make a rewrite pass."""
    _append(settings, 3)
    _sql(settings, "update auditevent set actor = 'mallory@example.com' where id = 3")
    _unkeyed_chain(settings, drop_key_id=True)

    report = _report(settings)
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", 3)]


def test_f10_events_forged_with_another_key_are_detected(settings: Settings, tmp_path: Path) -> None:
    _append(settings, 2)
    other = tmp_path / "elsewhere"
    forger = _settings(other, f"sqlite:///{other / 'forged.db'}", audit_key=f"{_current_key_id(settings)}:" + "x" * 44)
    migrate(forger.db_url)
    _append(forger, 3)
    with session_scope(forger.db_url, write=False) as session:
        forged = session.exec(select(AuditEvent).where(AuditEvent.id == 3)).one()
    with session_scope(settings.db_url) as session:
        session.execute(AuditEvent.__table__.insert(), [forged.model_dump()])  # type: ignore[attr-defined]

    report = _report(settings)
    assert [(p.kind, p.seq) for p in report.problems] == [("broken_link", 3), ("altered", 3)]


def test_f10_deleting_an_event_in_the_middle_says_which(settings: Settings) -> None:
    _append(settings, 6)
    _sql(settings, "delete from auditevent where id in (3, 4)")

    report = _report(settings)
    assert [(p.kind, p.seq) for p in report.problems] == [("missing", 3)]
    assert "events 3–4 are missing" in report.problems[0].detail


def test_f10_the_key_lives_outside_the_db_in_a_private_file(settings: Settings, tmp_path: Path) -> None:
    _append(settings, 2)
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    kid, _, key = key_file.read_text().strip().partition(":")
    with session_scope(settings.db_url, write=False) as session:
        events = session.exec(select(AuditEvent)).all()
    assert {e.key_id for e in events} == {kid}
    assert key not in json.dumps([e.model_dump() for e in events], default=str)
    audit_config(settings).head.flush()  # heads reach the file within half a second; now, for the test
    head = json.loads((tmp_path / HEAD_FILE).read_text())["heads"]
    assert [(h["seq"], h["key_id"]) for h in head.values()] == [(2, kid)]


def test_f10_rotated_keys_verify_and_an_unknown_key_id_is_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lapse.db'}"
    migrate(url)
    _append(_settings(tmp_path, url, audit_key=KEY_A), 2)
    rotated = _settings(tmp_path, url, audit_key=f"{KEY_B},{KEY_A}")  # b2 MACs new events, a1 still verifies
    _append(rotated, 2)
    report = _report(rotated)
    assert report.intact, report.problems
    with session_scope(url, write=False) as session:
        assert [e.key_id for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))] == [
            "a1",
            "a1",
            "b2",
            "b2",
        ]

    retired = _settings(tmp_path, url, audit_key=KEY_B)  # a1 dropped too early
    report = _report(retired)
    assert [(p.kind, p.seq) for p in report.problems] == [("unknown_key", 1), ("unknown_key", 2)]
    assert "key id 'a1', which is not configured" in report.problems[0].detail


def test_f10_a_malformed_audit_key_is_refused_without_quoting_it(tmp_path: Path) -> None:
    secret = "k1:" + base64.b64encode(b"short").decode()
    with pytest.raises(AuditKeyError, match="5 bytes") as error:
        _settings(tmp_path, f"sqlite:///{tmp_path / 'lapse.db'}", audit_key=secret)
    assert secret.partition(":")[2] not in str(error.value)
    assert generate_key("x").startswith("x:")


def test_f10_a_rolled_back_append_does_not_move_the_checkpoint(settings: Settings) -> None:
    _append(settings, 2)
    with pytest.raises(RuntimeError), session_scope(settings.db_url) as session:
        append_audit(session, [AuditEntry(actor="ada@example.com", action="test.event", target="x")])
        raise RuntimeError("the caller's transaction fails")
    report = _report(settings)
    assert report.intact and report.checkpoint is not None and report.checkpoint.seq == 2


def test_f10_legacy_events_verify_as_a_prefix_anchored_by_the_keyed_chain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lapse.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0004")  # a log written by the unkeyed scheme
    with session_scope(url) as session:
        for n in (1, 2, 3):
            session.execute(
                text(
                    "insert into auditevent (id, at, actor, action, target, reason, details, prev_hash, hash) "
                    "values (:id, '2026-11-30 10:00:00.000000', 'ada@example.com', 'old.event', :t, '', '{}', '', '')"
                ),
                {"id": n, "t": f"t{n}"},
            )
    migrate(url)  # 0005
    settings = _settings(tmp_path, url)
    _unkeyed_chain(settings)  # the old scheme's own hashes

    report = _report(settings)
    assert report.intact and report.legacy_events == 3
    assert "no keyed event anchors them yet" in report.notes[0]

    _append(settings, 2)
    report = _report(settings)
    assert report.intact, report.problems
    assert report.legacy_events == 3 and "keyed event 4 anchors them" in report.notes[0]

    _sql(settings, "update auditevent set reason = 'rewritten' where id = 2")
    _unkeyed_chain(settings, upto=3)  # the legacy links recomputed: the keyed event after them no longer follows
    report = _report(settings)
    assert [(p.kind, p.seq) for p in report.problems] == [("broken_link", 4)]


def test_f10_verify_route_and_cli_say_what_is_wrong_and_where(settings: Settings, tmp_path: Path) -> None:
    with session_scope(settings.db_url) as session:
        load_org(session, OrgFile.read(DEMO_ORG), connectors=checked_connector)
    _append(settings, 4)
    _sql(settings, "delete from auditevent where id = 4")
    app = create_app(settings)

    async def call() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test") as client:
            response = await client.get("/api/audit/verify", headers={"X-Forwarded-Email": "ada@example.com"})
            assert response.status_code == 200, response.text
            return response.json()

    check = asyncio.run(call())
    assert check["intact"] is False and check["first_altered"] == 4 and check["last_seq"] == 3
    assert check["checkpoint"]["seq"] == 4 and check["checkpoint"]["file"] == str(tmp_path / HEAD_FILE)
    assert [(p["kind"], p["seq"]) for p in check["problems"]] == [("truncated", 4)]

    import starter.cli as cli

    original = cli._call
    cli._call = lambda *args, **kwargs: check  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(cli.app, ["--as", "ada@example.com", "audit", "verify"])
    finally:
        cli._call = original  # type: ignore[assignment]
    assert result.exit_code == 1
    assert "NOT INTACT from event 4" in result.output
    assert "truncated at event 4: events after 3 are missing" in result.output


# --- finding 15: refusals are audited, but a script repeating one cannot flood the log --------------


def _refusals(settings: Settings) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(col(AuditEvent.action).endswith(".refused")).order_by(col(AuditEvent.id))
        return list(session.exec(query))


@pytest.fixture
def flushed() -> Iterator[None]:
    yield
    flush_refusals(everything=True)


def test_f15_repeated_refusals_are_coalesced_into_one_event_with_a_count(settings: Settings, flushed: None) -> None:
    problem = Refusal(RefusalKind.FORBIDDEN, "alan@example.com is not an approver of this step")
    for _ in range(50):
        refused(settings, "alan@example.com", "request.approve", "access-request-x", problem)
    refused(settings, "alan@example.com", "request.deny", "access-request-x", problem)  # another action
    refused(settings, "linus@example.com", "request.approve", "access-request-x", problem)  # another caller

    events = _refusals(settings)
    assert [(e.actor, e.action) for e in events] == [
        ("alan@example.com", "request.approve.refused"),
        ("alan@example.com", "request.deny.refused"),
        ("linus@example.com", "request.approve.refused"),
    ]
    flush_refusals(everything=True)  # what the window's close (or the process's end) writes
    events = _refusals(settings)
    assert len(events) == 4
    assert events[-1].actor == "alan@example.com" and events[-1].details["count"] == 49
    assert _report(settings).intact


async def test_f15_counted_refusals_are_written_when_their_window_closes(tmp_path: Path, app_db: str) -> None:
    migrate(app_db)
    settings = _settings(tmp_path, app_db, audit_refusal_window=0.3)
    refusal = Refusal(RefusalKind.CONFLICT, "not active")
    for _ in range(10):
        refused(settings, "alan@example.com", "grant.extend", "access-request-y", refusal)
    assert len(_refusals(settings)) == 1
    # Nobody calls again: the flusher writes the count on its own.
    events = await eventually(
        lambda: _refusals(settings), until=lambda events: len(events) >= 2, what="the repeats' count", within=10
    )
    assert [e.details.get("count") for e in events] == [None, 9]


def verify_audit_intact(settings: Settings) -> bool:
    with session_scope(settings.db_url, write=False) as session:
        return verify_audit(session) is None


def _current_key_id(settings: Settings) -> str:
    return (settings.data_dir / KEY_FILE).read_text().split(":")[0]


async def test_f10_the_temporal_checkpoint_detects_truncation_even_with_the_head_file_gone(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The scheduled audit-checkpoint workflow keeps the head in Temporal too, and never moves it back."""
    settings = make_settings(tmp_path, env.client.service_client.config.target_host)
    _append(settings, 5)
    async with build_worker(env.client, settings, task_queue=settings.task_queue):
        first = await _checkpoint(env, settings)
        assert (first.seq, first.kept) == (5, "")

        _sql(settings, "delete from auditevent where id > 3")  # the newest events...
        audit_config(settings).head.flush()
        (tmp_path / HEAD_FILE).unlink()  # ...and the head file with them
        second = await _checkpoint(env, settings)
        assert second.seq == 5 and "the log ends at 3" in second.kept  # the checkpoint did not move back

        app = create_app(settings, client=env.client)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test") as client:

            async def verified() -> Any:
                response = await client.get("/api/audit/verify", headers={"X-Forwarded-Email": "ada@example.com"})
                return response.json()

            check = await eventually(  # visibility catches up with the run that just closed
                verified, until=lambda check: check["other_checkpoints"], what="the Temporal checkpoint to be read"
            )
    assert check["intact"] is False
    assert [(p["kind"], p["seq"]) for p in check["problems"]] == [("truncated", 4), ("no_checkpoint", None)]
    assert "the checkpoint says the log reached 5 (Temporal" in check["problems"][0]["detail"]
    assert any("kept its previous checkpoint" in note for note in check["notes"])


async def _checkpoint(env: WorkflowEnvironment, settings: Settings) -> AuditCheckpoint:
    result: AuditCheckpoint = await env.client.execute_workflow(
        AuditCheckpointWorkflow.run, id=f"audit-checkpoint-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue
    )
    return result
