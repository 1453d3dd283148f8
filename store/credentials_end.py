"""Ending a user's sign-in credentials for good when they are deactivated: their API tokens are revoked and
their browser sessions ended, in the caller's transaction, audited.

A deactivated user's tokens and sessions already stop working while they are inactive (``token_user`` and
``session_user`` check the owner); ending them here makes that last: reactivating the user later brings
neither back, so they sign in again and make new tokens. Every way a user is deactivated calls this: the
directory sync's leavers (``activities/directory.py``), the organisation file's ``active: false``
(``store/org_load.py``), and an admin deactivating a service account (``starter/services/tokens.py``). It lives
in ``store`` so that all three reach it without importing the layer above them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from access.types import AuditEntry
from store.audit_log import append_audit
from store.tables import ApiToken, WebSession

CHUNK = 500
"""Emails (and ids) per statement: a directory sync may make thousands of leavers at once."""


@dataclass
class Ended:
    """What ``end_credentials`` ended: the revoked tokens' ids by owner, and how many sessions per user."""

    tokens: dict[str, list[str]] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def end_credentials(session: Session, reasons: Mapping[str, str], *, actor: str, at: datetime | None = None) -> Ended:
    """Revoke the API tokens and end the browser sessions of every user in ``reasons`` (email → why), in the
    caller's transaction. Each token revoked is audited (``token.revoked``, its owner and name, the reason), and
    each user whose sessions ended (``session.ended``, how many). Tokens already revoked or expired, and
    sessions already ended, are left as they are."""
    now = at or datetime.now(UTC)
    why = {email.strip().lower(): reason for email, reason in reasons.items()}
    ended = Ended()
    events: list[AuditEntry] = []
    for emails in _chunks(sorted(why)):
        tokens = session.exec(
            select(ApiToken)
            .where(col(ApiToken.owner).in_(emails), col(ApiToken.revoked_at).is_(None), ApiToken.expires_at > now)
            .order_by(col(ApiToken.owner), col(ApiToken.id))
        ).all()
        for token in tokens:
            ended.tokens.setdefault(token.owner, []).append(token.id)
            events.append(
                AuditEntry(
                    actor=actor,
                    action="token.revoked",
                    target=f"token:{token.id}",
                    reason=why[token.owner],
                    details={"owner": token.owner, "name": token.name},
                    at=now,
                )
            )
        for ids in _chunks([token.id for token in tokens]):
            session.execute(update(ApiToken).where(col(ApiToken.id).in_(ids)).values(revoked_at=now))
        live = session.exec(
            select(WebSession.email).where(col(WebSession.email).in_(emails), col(WebSession.ended_at).is_(None))
        ).all()
        for email in live:
            ended.sessions[email] = ended.sessions.get(email, 0) + 1
        if live:
            session.execute(
                update(WebSession)
                .where(col(WebSession.email).in_(emails), col(WebSession.ended_at).is_(None))
                .values(ended_at=now)
            )
    events += [
        AuditEntry(
            actor=actor, action="session.ended", target=email, reason=why[email], details={"sessions": count}, at=now
        )
        for email, count in sorted(ended.sessions.items())
    ]
    append_audit(session, events)
    return ended
