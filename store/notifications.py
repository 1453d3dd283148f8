"""The notification outbox: notices queued with the event that made them, claimed and marked by the dispatcher.

A notice (``access.notifications.Notice``) becomes one row per channel and destination here, in the caller's
transaction, so it is queued exactly when its event is recorded. The dispatcher (``activities.notify``) claims
due rows under a lease, sends them, and marks each sent, skipped, due again later, or failed. Also here: a
person's channel preference and whole organisation-file sections (``notifications``, ``on_call``) kept as JSON;
their typed models live with the senders (``activities.notify.config``), which this layer may not import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, event, exists, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from access.notifications import PERSONAL_CHANNELS, Channel, Notice, NoticeKind
from store.tables import Notification, NotificationPreference, OrgSection, User

PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"
NOTIFICATIONS, ON_CALL = "notifications", "on_call"
"""The organisation-file sections kept whole."""
MAX_ERROR = 500
"""The longest failure text kept on a row: enough to act on, never a whole response body."""


@dataclass(frozen=True)
class Destination:
    """A shared destination a broadcast notice may go to: a Slack channel, a Teams webhook, a webhook.

    Each filter given must match; an empty one matches everything."""

    channel: Channel
    target: str
    """The configuration's name for it (the Slack channel, the Teams or webhook ``name``)."""
    kinds: frozenset[NoticeKind]
    workflows: frozenset[str] = frozenset()
    integrations: frozenset[str] = frozenset()

    def takes(self, notice: Notice) -> bool:
        if notice.kind not in self.kinds:
            return False
        if self.workflows and notice.details.get("workflow") not in self.workflows:
            return False
        return not self.integrations or notice.role.partition("/")[0] in self.integrations


@dataclass(frozen=True)
class Routes:
    """Where notices may go, as the ``notifications`` section configures it (``activities.notify.settings
    .routes_of`` makes one): which personal channels exist, which a person gets when they chose none, and the
    shared destinations broadcasts go to."""

    personal: tuple[Channel, ...] = ()
    """The personal channels configured (Slack with direct messages on, email)."""
    defaults: tuple[Channel, ...] = ()
    """The personal channels a person without a preference is told by (among ``personal``)."""
    broadcasts: tuple[Destination, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """Nothing configured: nothing to queue (and nothing to work out)."""
        return not self.personal and not self.broadcasts


NO_ROUTES = Routes()


# --- queueing --------------------------------------------------------------------------------


LOUD_HEAD_START = timedelta(hours=1)
"""How much earlier a loud notice is due than others queued with it: sent first after an approvers' flood."""
UPDATABLE = frozenset({Channel.SLACK})
"""Channels whose messages Lapse updates after sending (an ``update_only`` notice goes to these alone)."""


def queue(session: Session, notices: Sequence[Notice], routes: Routes, *, now: datetime) -> int:
    """Queue ``notices`` in the session's transaction: one row per channel and destination each goes to.

    A person's notice goes by their chosen channels among those configured, else by the defaults; a broadcast
    (no recipient) to every destination whose filters take it. Rows whose key is queued already are skipped,
    so queueing an event again queues nothing twice. Returns how many rows were added. A few statements
    whatever the number of notices: one read of the recipients' preferences, one insert.
    """
    if not notices or routes.empty:
        return 0
    chosen = _preferences(session, {n.recipient for n in notices if n.recipient is not None}, routes)
    rows: list[dict[str, Any]] = []
    for notice in notices:
        if notice.recipient is None:
            targets = [(d.channel, d.target) for d in routes.broadcasts if d.takes(notice)]
        else:
            channels = chosen.get(notice.recipient, routes.defaults)
            if notice.details.get("loud"):  # break-glass: every personal channel, whatever the person chose
                channels = routes.personal
            elif notice.details.get("update_only"):  # nothing new to say: only a chat's earlier prompt changes
                channels = tuple(c for c in channels if c in UPDATABLE)
            targets = [(channel, "") for channel in channels]
        body = notice.model_dump(mode="json")
        for channel, target in targets:
            rows.append(
                {
                    "key": f"{notice.key}:{channel.value}:{target}",
                    "channel": channel.value,
                    "target": target,
                    "kind": notice.kind.value,
                    "recipient": notice.recipient,
                    "subject": notice.subject,
                    "notice": body,
                    "state": PENDING,
                    "attempts": 0,
                    # A loud notice (break-glass) jumps the queue: due "earlier", the claim's index order is kept.
                    "due_at": now - LOUD_HEAD_START if notice.details.get("loud") else now,
                    "created_at": now,
                    "ref": {},
                }
            )
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = Notification.__table__  # type: ignore[attr-defined]
    # One cached statement executed for every row (SQLAlchemy batches it into multi-row INSERTs itself): building
    # a ``.values(chunk)`` statement compiles one bind parameter per cell, a second per 2,500 rows. What was
    # added, by RETURNING: psycopg reports no row count for a multi-row insert.
    statement = insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id)
    added = len(session.execute(statement, rows).all())
    if added and not session.info.get(_WAKING):
        session.info[_WAKING] = True
        event.listen(session, "after_commit", _wake_on_commit, once=True)
    return added


# A dispatcher in this process is woken as soon as rows it may send are committed (others poll).
_WAKING = "lapse.notifications.waking"
_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def listen(wake: Callable[[], None]) -> Callable[[], None]:
    """Call ``wake`` (from whichever thread commits) after each commit that queued rows; returns the function
    that stops it. ``wake`` must be quick and thread-safe (``Dispatcher.wake``)."""
    with _listeners_lock:
        _listeners.append(wake)

    def stop() -> None:
        with _listeners_lock:
            if wake in _listeners:
                _listeners.remove(wake)

    return stop


def _wake_on_commit(session: Session) -> None:
    session.info.pop(_WAKING, None)
    with _listeners_lock:
        listeners = list(_listeners)
    for wake in listeners:
        wake()


def _preferences(session: Session, people: set[str], routes: Routes) -> dict[str, tuple[Channel, ...]]:
    """Each person's chosen channels among the configured ones (people with no preference are left out)."""
    if not people or not routes.personal:
        return {}
    found = session.execute(_PREFERENCES, {"people": sorted(people)})
    return {email: tuple(c for c in routes.personal if c.value in channels) for email, channels in found}


_PREFERENCES: Any = select(NotificationPreference.user_email, NotificationPreference.channels).where(
    col(NotificationPreference.user_email).in_(bindparam("people", expanding=True))
)
"""Built once: queueing reads it in every step's bookkeeping that tells someone something."""


def admins(session: Session) -> list[str]:
    """The active admins' emails: who is told of trouble (a failed grant, a revoke that keeps failing)."""
    found = session.exec(
        select(User.email).where(col(User.is_admin).is_(True), col(User.active).is_(True)).order_by(User.email)
    )
    return list(found)


# --- a person's channels ---------------------------------------------------------------------


def preference(session: Session, email: str) -> list[Channel] | None:
    """The personal channels ``email`` chose, or None: they chose none (the defaults apply)."""
    row = session.get(NotificationPreference, email)
    if row is None:
        return None
    return [c for c in PERSONAL_CHANNELS if c.value in row.channels]


def save_preference(session: Session, email: str, channels: Iterable[Channel] | None, *, now: datetime) -> None:
    """Keep ``email``'s chosen channels (an empty list: none at all); None forgets the choice (the defaults)."""
    row = session.get(NotificationPreference, email)
    if channels is None:
        if row is not None:
            session.delete(row)
        return
    chosen = set(channels)
    values = [c.value for c in PERSONAL_CHANNELS if c in chosen]
    row = row or NotificationPreference(user_email=email, channels=values, updated_at=now)
    row.channels, row.updated_at = values, now
    session.add(row)


# --- organisation-file sections --------------------------------------------------------------


def section(session: Session, name: str) -> dict[str, Any] | None:
    """A stored section of the organisation file (``notifications``, ``on_call``), or None if not given."""
    row = session.get(OrgSection, name)
    return dict(row.body) if row is not None else None


def section_row(session: Session, name: str) -> OrgSection | None:
    """The section's row, with who changed it last and when (a cache is keyed on ``updated_at``)."""
    return session.get(OrgSection, name)


def section_version(session: Session, name: str) -> datetime | None:
    """When the section last changed (None: it is not there): what a cache of it is keyed on, read without
    loading its body. A cached statement: it runs in every step's bookkeeping."""
    return session.execute(_SECTION_VERSION, {"section": name}).scalar_one_or_none()


_SECTION_VERSION: Any = select(OrgSection.updated_at).where(OrgSection.name == bindparam("section"))


def save_section(session: Session, name: str, body: dict[str, Any] | None, by: str, *, now: datetime) -> bool:
    """Store a section as given (validated by the caller; secrets are references only); None removes it.
    Returns whether anything changed."""
    row = session.get(OrgSection, name)
    if body is None:
        if row is None:
            return False
        session.delete(row)
        return True
    if row is not None and row.body == body:
        return False
    row = row or OrgSection(name=name, body=body, updated_by=by, updated_at=now)
    row.body, row.updated_by, row.updated_at = body, by, now
    session.add(row)
    return True


# --- the dispatcher's side -------------------------------------------------------------------


def any_due(session: Session, *, now: datetime) -> bool:
    """Whether any row is due now: a read, so an idle dispatcher's polls take no write lock."""
    return session.execute(_ANY_DUE, {"due_now": now}).first() is not None


_ANY_DUE: Any = (
    select(Notification.id)
    .where(Notification.state == PENDING, col(Notification.due_at) <= bindparam("due_now"))
    .limit(1)
)


def claim_due(session: Session, *, now: datetime, lease: timedelta, limit: int) -> list[Notification]:
    """Claim up to ``limit`` rows due now for ``lease``: each is this caller's until then. Oldest id first.

    A claimed row's ``due_at`` moves to the lease's end, so the index of due rows skips it while it is
    being sent, and finds it again only if its sender never said how it went (its worker died). The update
    re-checks ``due_at``, so of two dispatchers claiming the same row one gets it. A person's row waits for
    their earlier rows about the same subject on the same channel (sent, skipped or given up first).
    One statement, built once per ``limit``: the claim runs for nearly every commit that queues rows.
    """
    if limit <= 0:
        return []
    claimed = session.scalars(_claim_statement(limit), {"claim_now": now, "claim_until": now + lease})
    return sorted(claimed, key=lambda row: row.id or 0)


@cache
def _claim_statement(limit: int) -> Any:
    # One person's messages about one subject on one channel go in order: a decision that updates an approver's
    # prompt waits while the prompt itself is still being sent or retried (else it finds nothing to update, and
    # the prompt lands later with live buttons).
    earlier = aliased(Notification)
    now: Any = bindparam("claim_now")
    until: Any = bindparam("claim_until")
    waiting_on_earlier = exists().where(
        col(earlier.subject) == col(Notification.subject),
        col(earlier.recipient) == col(Notification.recipient),
        col(earlier.channel) == col(Notification.channel),
        col(earlier.state) == PENDING,
        col(earlier.id) < col(Notification.id),
    )
    candidates = (
        select(Notification.id)
        .where(Notification.state == PENDING, col(Notification.due_at) <= now, ~waiting_on_earlier)
        .order_by(col(Notification.due_at), col(Notification.id))
        .limit(limit)
    )
    return (
        update(Notification)
        .where(
            col(Notification.id).in_(candidates), col(Notification.state) == PENDING, col(Notification.due_at) <= now
        )
        .values(claimed_until=until, due_at=until)
        .returning(Notification)
        .execution_options(synchronize_session=False)
    )


def followed(session: Session, rows: Sequence[Notification]) -> bool:
    """Whether a pending row comes after one of ``rows`` in a person's messages about the same subject on the same
    channel: it waited for them (``claim_due``) and may go now they are done. One indexed read."""
    threads = {(r.subject, r.recipient, r.channel) for r in rows if r.recipient is not None}
    if not threads:
        return False
    pending = session.exec(
        select(Notification.subject, Notification.recipient, Notification.channel).where(
            col(Notification.subject).in_({subject for subject, _, _ in threads}),
            col(Notification.recipient).in_({recipient for _, recipient, _ in threads}),
            Notification.state == PENDING,
        )
    )
    return any((subject, recipient, channel) in threads for subject, recipient, channel in pending)


def previous_refs(session: Session, rows: Sequence[Notification]) -> dict[int, list[dict[str, Any]]]:
    """For each personal row, what its channel made of the earlier notices sent about the same subject to the
    same person (oldest first): a decision updates those messages. One query for all of ``rows``."""
    personal = [r for r in rows if r.recipient is not None and r.id is not None]
    if not personal:
        return {}
    subjects = {r.subject for r in personal}
    recipients = {r.recipient for r in personal}
    earlier = session.exec(
        select(Notification)
        .where(
            col(Notification.subject).in_(subjects),
            col(Notification.recipient).in_(recipients),
            Notification.state == SENT,
        )
        .order_by(col(Notification.id))
    )
    by_thread: dict[tuple[str, str | None, str], list[tuple[int, dict[str, Any]]]] = {}
    for row in earlier:
        if row.ref and row.id is not None:
            by_thread.setdefault((row.subject, row.recipient, row.channel), []).append((row.id, dict(row.ref)))
    found: dict[int, list[dict[str, Any]]] = {}
    for row in personal:
        assert row.id is not None
        thread = by_thread.get((row.subject, row.recipient, row.channel), [])
        found[row.id] = [ref for ref_id, ref in thread if ref_id < row.id]
    return found


def mark_sent(session: Session, row_id: int, *, ref: dict[str, Any], now: datetime) -> None:
    mark_done(session, sent=[(row_id, ref)], now=now)


def mark_skipped(session: Session, row_id: int, *, why: str, now: datetime) -> None:
    mark_done(session, skipped=[(row_id, why)], now=now)


def mark_done(
    session: Session,
    *,
    sent: Sequence[tuple[int, dict[str, Any]]] = (),
    skipped: Sequence[tuple[int, str]] = (),
    now: datetime,
) -> None:
    """Mark rows sent (with what their channel made of them) or skipped (with why): one cached statement
    executed for them all, not one built per row. A row no longer pending (given up meanwhile) is left."""
    if sent:
        session.execute(_MARK_SENT, [{"row": row, "row_ref": ref, "at": now} for row, ref in sent])
    if skipped:
        session.execute(_MARK_SKIPPED, [{"row": row, "why": why[:MAX_ERROR], "at": now} for row, why in skipped])


def _mark_statement(state: str, **values: Any) -> Any:
    table = Notification.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(table.c.id == bindparam("row"), table.c.state == PENDING)
        .values(state=state, claimed_until=None, due_at=bindparam("at"), attempts=table.c.attempts + 1, **values)
    )


_MARK_SENT = _mark_statement(SENT, ref=bindparam("row_ref"), sent_at=bindparam("at"))
_MARK_SKIPPED = _mark_statement(SKIPPED, error=bindparam("why"))


def mark_failed(session: Session, row_id: int, *, why: str, attempts: int, now: datetime) -> bool:
    """Given up: kept, with why, for the request's page (the caller audits it). False: the row was no longer
    pending (another dispatcher finished it after a lease), so there is nothing to audit."""
    result = session.execute(
        update(Notification)
        .where(col(Notification.id) == row_id, col(Notification.state) == PENDING)
        .values(state=FAILED, claimed_until=None, due_at=now, error=why[:MAX_ERROR], attempts=attempts)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_retry(session: Session, row_id: int, *, why: str, attempts: int, due_at: datetime) -> None:
    """Due again at ``due_at``: the failure is kept meanwhile, so the page shows what is being retried."""
    session.execute(
        update(Notification)
        .where(col(Notification.id) == row_id, col(Notification.state) == PENDING)
        .values(attempts=attempts, due_at=due_at, claimed_until=None, error=why[:MAX_ERROR])
    )


# --- reading -----------------------------------------------------------------------------------


def purge(session: Session, *, before: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` rows sent or skipped before ``before`` (the outbox is not an archive: the audit
    log is). Failed rows stay: they are the request's record of who was never told."""
    done = (
        select(col(Notification.id))
        .where(col(Notification.state).in_((SENT, SKIPPED)), col(Notification.due_at) < before)
        .limit(limit)
    )
    ids = list(session.exec(done).all())
    if ids:
        session.execute(delete(Notification).where(col(Notification.id).in_(ids)))
    return len(ids)


def about(session: Session, subject: str, *, limit: int = 500) -> list[Notification]:
    """The notifications about a request (or campaign), oldest first: who was told what, and what failed."""
    return list(
        session.exec(
            select(Notification).where(Notification.subject == subject).order_by(col(Notification.id)).limit(limit)
        )
    )
