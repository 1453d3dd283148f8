"""Browser sessions: started after a sign-in, kept server-side in the app DB, ended by sign-out or by time.

The cookie holds a random session id; the app DB keeps only its SHA-256, so reading the DB (or a backup of it)
signs nobody in. Each sign-in makes a new id (no session fixation). A session ends when signed out, when it
has been idle for ``session_idle``, or ``session_max`` after its sign-in, whichever comes first, and at once
when its user is deactivated or gone.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, delete, or_, select

from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from store import catalog
from store.audit_log import append_audit
from store.credentials_end import end_credentials
from store.db import session_scope
from store.settings import Settings
from store.tables import User, WebSession

COOKIE_NAME = "lapse_session"
SLIDE_EVERY = timedelta(minutes=1)
"""A session's ``last_seen_at`` is written at most this often: one write a minute per active browser, not
one per request."""


@dataclass(frozen=True)
class StartedSession:
    """A new session: ``id`` goes in the cookie (``COOKIE_NAME``, ``cookie_options``) and nowhere else."""

    id: str
    csrf_token: str
    expires_at: datetime
    """When it ends however it is used (``session_max`` after the sign-in)."""


@dataclass(frozen=True)
class SessionInfo:
    """A live session and its signed-in, active user."""

    user: User
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    auth_time: datetime | None
    """When the identity provider last authenticated the user; None when it did not say (a decision that needs a
    recent sign-in then sends them back to it)."""
    expires_at: datetime
    """When it ends if it is used until then (``session_max`` after the sign-in)."""

    @property
    def email(self) -> str:
        return self.user.email


def session_key(session_id: str) -> str:
    """What the app DB stores for a session id: its SHA-256 (hex)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def can_sign_in(user: User | None, email: str) -> User:
    """The user signing in as ``email``, if they may sign in to a browser: a known, active person (a service
    account holds tokens only); else a refusal."""
    if user is None or not user.active:
        raise Refusal(RefusalKind.UNAUTHENTICATED, f"{email} is not an active Lapse user")
    if user.is_service:
        raise Refusal(RefusalKind.UNAUTHENTICATED, f"{email} is a service account: it signs in with API tokens only")
    return user


def start_session(settings: Settings, email: str, *, auth_time: datetime | None) -> StartedSession:
    """Start a session for ``email`` (after the identity provider authenticated them at ``auth_time``, None if it
    did not say when): a new random id every time. Refuses (``UNAUTHENTICATED``) someone who is not an active
    Lapse person."""
    if auth_time is not None and auth_time.tzinfo is None:
        raise ValueError("auth_time must be timezone-aware")
    email = email.strip().lower()
    now = _now()
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    with session_scope(settings.db_url) as session:
        user = can_sign_in(catalog.find_user(session, email), email)
        _forget_ended(session, settings, user.email, now)
        session.add(
            WebSession(
                id=session_key(session_id),
                email=user.email,
                created_at=now,
                last_seen_at=now,
                auth_time=min(auth_time.astimezone(UTC), now) if auth_time is not None else None,
                csrf_token=csrf_token,
            )
        )
        append_audit(session, [AuditEntry(actor=user.email, action="session.started", target=user.email, at=now)])
    return StartedSession(id=session_id, csrf_token=csrf_token, expires_at=now + settings.session_max)


def _forget_ended(session: Session, settings: Settings, email: str, now: datetime) -> None:
    """Delete the user's sessions that can no longer be used, so the table holds live sessions and little else."""
    session.exec(
        delete(WebSession).where(
            col(WebSession.email) == email,
            or_(
                col(WebSession.ended_at).is_not(None),
                col(WebSession.last_seen_at) < now - settings.session_idle,
                col(WebSession.created_at) < now - settings.session_max,
            ),
        )
    )


def end_session(settings: Settings, session_id: str) -> None:
    """Sign out: the session ends at once, wherever its cookie is. Unknown or already ended ids do nothing."""
    now = _now()
    with session_scope(settings.db_url) as session:
        row = session.get(WebSession, session_key(session_id))
        if row is None or row.ended_at is not None:
            return
        row.ended_at = now
        session.add(row)
        append_audit(session, [AuditEntry(actor=row.email, action="session.ended", target=row.email, at=now)])


def end_user_sessions(settings: Settings, email: str) -> int:
    """End every session of ``email`` (sign out everywhere); how many were live."""
    now = _now()
    email = email.strip().lower()
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(WebSession).where(WebSession.email == email, col(WebSession.ended_at).is_(None))
        ).all()
        for row in rows:
            row.ended_at = now
            session.add(row)
        if rows:
            append_audit(
                session,
                [
                    AuditEntry(
                        actor=email, action="session.ended", target=email, details={"sessions": len(rows)}, at=now
                    )
                ],
            )
    return len(rows)


def session_user(settings: Settings, session_id: str) -> SessionInfo | None:
    """The live session with this id and its user, or None: unknown, signed out, idle past ``session_idle``,
    older than ``session_max``, or its user no longer an active person. Using it slides its idle time
    (written at most once a minute)."""
    if not session_id or len(session_id) > 128:
        return None
    key = session_key(session_id)
    now = _now()
    with session_scope(settings.db_url, write=False) as session:
        found = session.exec(
            select(WebSession, User).join(User, col(User.email) == WebSession.email).where(WebSession.id == key)
        ).first()
    if found is None:
        return None
    row, user = found
    expires_at = row.created_at + settings.session_max
    if row.ended_at is not None or now >= expires_at or now >= row.last_seen_at + settings.session_idle:
        return None
    if not user.active:  # deactivated some way that did not end its sessions: end them (and its tokens) for good
        with session_scope(settings.db_url) as session:
            end_credentials(session, {user.email: "no longer an active user"}, actor="lapse", at=now)
        return None
    if user.is_service:
        _end(settings, key, now)
        return None
    last_seen = row.last_seen_at
    if now - last_seen >= SLIDE_EVERY:
        last_seen = now
        with session_scope(settings.db_url) as session:
            session.execute(update(WebSession).where(col(WebSession.id) == key).values(last_seen_at=now))
    return SessionInfo(
        user=user,
        csrf_token=row.csrf_token,
        created_at=row.created_at,
        last_seen_at=last_seen,
        auth_time=row.auth_time,
        expires_at=expires_at,
    )


def _end(settings: Settings, key: str, now: datetime) -> None:
    with session_scope(settings.db_url) as session:
        row = session.get(WebSession, key)
        if row is not None and row.ended_at is None:
            row.ended_at = now
            session.add(row)


def cookie_options(settings: Settings) -> dict[str, Any]:
    """The session cookie's attributes, for ``response.set_cookie(COOKIE_NAME, started.id, **cookie_options(s))``:
    not readable by scripts, not sent on cross-site subrequests or posts, ``Secure`` when Lapse is served
    over https, and gone from the browser when the session could not be used anyway."""
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": settings.external_url.startswith("https://"),
        "path": "/",
        "max_age": int(settings.session_max.total_seconds()),
    }


def set_session_cookie(response: Any, settings: Settings, started: StartedSession) -> None:
    """Give the browser its session (``response``: a Starlette response)."""
    response.set_cookie(COOKIE_NAME, started.id, **cookie_options(settings))


def clear_session_cookie(response: Any, settings: Settings) -> None:
    """Make the browser forget its session cookie (after ``end_session``)."""
    options = {k: v for k, v in cookie_options(settings).items() if k != "max_age"}
    response.delete_cookie(COOKIE_NAME, **options)
