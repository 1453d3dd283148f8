"""The audit log in the app DB: appending HMAC-chained events, checking the chain, and coalescing refusals."""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from access.checkpoint import Head
from access.types import AuditEntry
from store.audit import (
    LEGACY_KEY_ID,
    AuditConfig,
    AuditHeadError,
    AuditKeyring,
    RefusalCoalescer,
    audit_config,
)
from store.db import engine_for, lock, session_scope
from store.settings import Settings, get_settings
from store.tables import AuditEvent

log = logging.getLogger(__name__)


# --- audit ----------------------------------------------------------------------------------
#
# Each event's ``hash`` is an HMAC over its content and the previous event's ``hash``, with a key the
# DB does not hold (store.audit); after each commit that appends events, the head (sequence number
# and MAC) is checkpointed to a file in the data dir (and, by the audit-checkpoint workflow, in
# Temporal). ``audit_report`` checks the chain against them.

_PENDING_HEAD = "lapse.audit.head"
_chains: dict[str, AuditConfig] = {}


def chain_id(bind: Engine | Connection | str) -> str:
    """Names an app DB's chain in the head file: its URL as the engine sees it, without the password."""
    engine = engine_for(bind) if isinstance(bind, str) else bind
    return engine.engine.url.render_as_string(hide_password=True)


def configure_audit(settings: Settings) -> AuditConfig:
    """Use these settings' audit key and data dir for their app DB's chain (the API and the worker do it at
    start, ``audit_refusal`` on each call). Raises :class:`store.audit.AuditKeyError` on a malformed key."""
    config = audit_config(settings)
    _chains[chain_id(settings.db_url)] = config
    return config


def _config_for(session: Session) -> tuple[str, AuditConfig]:
    bind = session.get_bind()
    chain = chain_id(bind)
    config = _chains.get(chain)
    if config is None:  # a process that did not configure_audit: the environment's settings
        settings = get_settings()
        url = bind.engine.url
        if chain_id(settings.db_url) != chain and url.get_backend_name() == "sqlite" and url.database:
            # Another SQLite file than the configured one: its data dir is where it lies.
            settings = settings.model_copy(update={"data_dir": Path(url.database).parent})
        config = _chains.setdefault(chain, audit_config(settings))
    return chain, config


def _body(event: AuditEvent | dict[str, Any], prev_hash: str) -> list[Any]:
    row = event if isinstance(event, dict) else event.model_dump()
    return [
        row["id"],
        row["at"].astimezone(UTC).isoformat(),
        row["actor"],
        row["action"],
        row["target"],
        row["reason"],
        row["details"],
        prev_hash,
    ]


def _digest(prev_hash: str, event: AuditEvent | dict[str, Any]) -> str:
    """The unkeyed SHA-256 of events written before migration 0005 (legacy; verification only)."""
    body = json.dumps(_body(event, prev_hash)[:-1], sort_keys=True, default=str)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _mac(keyring: AuditKeyring, key_id: str, prev_hash: str, event: AuditEvent | dict[str, Any]) -> str:
    body = json.dumps(["lapse-audit-v2", key_id, *_body(event, prev_hash)], sort_keys=True, default=str)
    return keyring.mac(key_id, body.encode())


def append_audit(session: Session, entries: list[AuditEntry]) -> None:
    """Append events to the MAC-chained audit log inside the caller's transaction; the head file is
    checkpointed once that transaction commits."""
    if not entries:
        return
    chain, config = _config_for(session)
    keyring = config.keyring
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
            "key_id": keyring.current,
        }
        row["hash"] = prev_hash = _mac(keyring, keyring.current, prev_hash, row)
        rows.append(row)
        next_id += 1
    # One bulk insert: a directory sync's first run writes tens of thousands of events.
    session.execute(AuditEvent.__table__.insert(), rows)  # type: ignore[attr-defined]
    head = Head(
        seq=rows[-1]["id"], mac=prev_hash, key_id=keyring.current, at=rows[-1]["at"].astimezone(UTC).isoformat()
    )
    session.info[_PENDING_HEAD] = (config.head, chain, head)


@sa_event.listens_for(OrmSession, "after_commit")
def _checkpoint_head(session: OrmSession) -> None:
    pending = session.info.pop(_PENDING_HEAD, None)
    if pending is None:
        return
    head_file, chain, head = pending
    try:
        head_file.advance(chain, head)
    except Exception as error:  # the events are committed; a lagging head is only a weaker check
        log.warning("could not checkpoint the audit head to %s: %s", head_file.path, error)


@sa_event.listens_for(OrmSession, "after_rollback")
def _forget_head(session: OrmSession) -> None:
    session.info.pop(_PENDING_HEAD, None)


@dataclass(frozen=True)
class AuditProblem:
    kind: str
    """``altered``, ``broken_link``, ``missing``, ``unknown_key``, ``unkeyed_after_keyed``, ``truncated``,
    ``checkpoint_mismatch``, ``no_checkpoint`` or ``checkpoint_unreadable``."""
    seq: int | None
    """The first sequence number (event id) concerned."""
    detail: str


@dataclass
class AuditReport:
    events: int = 0
    last_seq: int | None = None
    legacy_events: int = 0
    """Events from before migration 0005, at the start of the log, checked by their unkeyed hash only."""
    checkpoint: Head | None = None
    checkpoint_file: str = ""
    other_checkpoints: dict[str, Head] = field(default_factory=dict)
    problems: list[AuditProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def first_broken(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None


_MAX_PROBLEMS = 50


def audit_report(session: Session, *, checkpoints: Mapping[str, Head] | None = None) -> AuditReport:
    """Walk the chain and compare its end with the head checkpoint file and any other ``checkpoints`` (by
    where they come from, e.g. the audit checkpoint workflow's last result): what is wrong, and where."""
    chain, config = _config_for(session)
    report = AuditReport(checkpoint_file=str(config.head.path), other_checkpoints=dict(checkpoints or {}))
    problems = report.problems

    def problem(kind: str, seq: int | None, detail: str) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(AuditProblem(kind, seq, detail))

    try:
        report.checkpoint = config.head.read(chain)
    except AuditHeadError as error:
        problem("checkpoint_unreadable", None, f"{error}: deleting the newest events cannot be ruled out")
    prev_hash = ""
    expected = 1
    keyed_from: int | None = None
    heads = {
        source: head
        for source, head in [(str(config.head.path), report.checkpoint), *report.other_checkpoints.items()]
        if head is not None and head.seq > 0
    }
    macs_at: dict[int, str] = {}
    query = select(AuditEvent).order_by(col(AuditEvent.id)).execution_options(yield_per=2000)
    for event in session.exec(query):
        seq = event.id or 0
        report.events += 1
        report.last_seq = seq
        if seq != expected:
            gap = f"event {expected} is" if seq == expected + 1 else f"events {expected}–{seq - 1} are"
            problem("missing", expected, f"{gap} missing (deleted from the middle of the log)")
        elif event.prev_hash != prev_hash:
            problem("broken_link", seq, f"event {seq} does not follow event {seq - 1}: the chain was rewritten")
        if event.key_id == LEGACY_KEY_ID:
            if keyed_from is not None:
                problem(
                    "unkeyed_after_keyed",
                    seq,
                    f"event {seq} has no MAC although keyed events began at {keyed_from}: it was forged or rewritten",
                )
            elif event.hash != _digest(event.prev_hash, event):
                problem("altered", seq, f"event {seq} (unkeyed, before migration 0005) was altered")
            else:
                report.legacy_events += 1
        elif event.key_id not in config.keyring.keys:
            problem(
                "unknown_key",
                seq,
                f"event {seq} was MACed with key id {event.key_id[:64]!r}, which is not configured "
                "(LAPSE_AUDIT_KEY or audit.key): it cannot be verified; add that key if it was retired",
            )
        elif not hmac.compare_digest(event.hash, _mac(config.keyring, event.key_id, event.prev_hash, event)):
            problem("altered", seq, f"event {seq} was altered: its MAC does not match its content")
        if event.key_id != LEGACY_KEY_ID and keyed_from is None:
            keyed_from = seq
        if any(seq == head.seq for head in heads.values()):
            macs_at[seq] = event.hash
        prev_hash = event.hash
        expected = seq + 1

    for source, head in heads.items():
        said = f"the checkpoint says the log reached {head.seq} ({source})"
        if report.last_seq is None:
            problem("truncated", 1, f"all {head.seq} events are missing: {said}")
        elif head.seq > report.last_seq:
            problem("truncated", report.last_seq + 1, f"events after {report.last_seq} are missing: {said}")
        elif head.seq in macs_at and not hmac.compare_digest(macs_at[head.seq], head.mac):
            problem(
                "checkpoint_mismatch",
                head.seq,
                f"event {head.seq} is not the one checkpointed ({source}): the log was rewritten",
            )
    if (
        report.checkpoint is None
        and keyed_from is not None
        and not any(p.kind == "checkpoint_unreadable" for p in problems)
    ):
        problem(
            "no_checkpoint",
            None,
            f"no checkpoint of this log in {config.head.path}: deleting the newest events cannot be ruled out",
        )
    if report.legacy_events:
        anchor = (
            f"keyed event {keyed_from} anchors them, so changes made since then are detected"
            if keyed_from is not None
            else "no keyed event anchors them yet, so they could still be rewritten unnoticed"
        )
        report.notes.append(
            f"events 1–{report.legacy_events} predate the keyed chain (migration 0005) and are checked by their "
            f"unkeyed hash only; {anchor}"
        )
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return report


def verify_audit(session: Session) -> AuditProblem | None:
    """The first thing wrong with the audit log, or None if it is intact (see :func:`audit_report`)."""
    report = audit_report(session)
    return report.problems[0] if report.problems else None


# --- refusals: audited, but a caller repeating one cannot flood the log ------------------------

_flusher_lock = threading.Lock()
_flusher_wake = threading.Event()
_flusher: threading.Thread | None = None
_refusals = RefusalCoalescer(on_first_repeat=_flusher_wake.set)


def audit_refusal(settings: Settings, entry: AuditEntry) -> None:
    """Audit a refused call. The first of identical refusals (same actor, action, target and reason) is
    written at once; repeats within ``settings.audit_refusal_window`` are counted and written as one event
    with their ``count`` when the window closes, so a script repeating a refused call costs at most two
    short write transactions per window."""
    configure_audit(settings)
    window = settings.audit_refusal_window
    if window <= 0:
        due = [entry]
    else:
        _start_flusher()
        due = _refusals.admit(settings.db_url, entry, window, time.monotonic())
    if due:
        with session_scope(settings.db_url) as session:
            append_audit(session, due)


def flush_refusals(*, everything: bool = False) -> None:
    """Write the counts of refusal windows that have closed (of all open ones with ``everything``)."""
    for url, events in _refusals.due(time.monotonic(), everything=everything).items():
        try:
            with session_scope(url) as session:
                append_audit(session, events)
        except Exception:  # one DB gone must not stop the others' counts
            log.exception("could not write %d coalesced refusal events to the audit log", len(events))


def _start_flusher() -> None:
    global _flusher
    with _flusher_lock:
        if _flusher is not None and _flusher.is_alive():
            return
        if _flusher is None:  # the first time: what is still counted at exit is written then
            atexit.register(flush_refusals, everything=True)
        _flusher = threading.Thread(target=_flush_loop, name="lapse-audit-refusals", daemon=True)
        _flusher.start()


def _flush_loop() -> None:
    while True:
        deadline = _refusals.next_deadline()
        _flusher_wake.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        _flusher_wake.clear()
        flush_refusals()
