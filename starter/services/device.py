"""Signing the CLI in through a browser: RFC 8628's device authorization flow, hosted by Lapse itself.

``lapse login`` asks for a sign-in (``start``) and shows its person a short code and a URL; the person opens the
URL in a browser signed in to Lapse the usual way (OIDC or the SSO proxy), checks the code and what is asked,
and approves or denies it (``decide``); meanwhile the CLI polls (``exchange``), and after an approval its next
poll gets a new API token of the person's, once. Lapse hosts the flow rather than the identity provider, so it
works with every provider (most offer no device flow, or one Lapse's client may not use) and behind the proxy,
and the CLI never sees the provider or Lapse's client secret.

Neither code is stored: the device code (256 random bits, what the CLI holds) as its SHA-256, the user code
(what the person types: 8 of 20 consonants, about 35 bits) as an HMAC under a key derived from Lapse's secret
key, so that a copy of the app DB gives neither back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import delete, update
from sqlmodel import Session, col, func, select

from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.services import tokens
from starter.services.oidc import derived_key
from starter.services.tokens import Scope, TokenCreate
from store import catalog
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import DeviceSignIn, User

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
"""Consonants only: no vowels, so no words, and nothing to mistake for a digit (no O, I, U)."""
USER_CODE_LENGTH = 8
EXPIRES_IN = timedelta(minutes=10)
"""How long a sign-in waits for its approval, and then for its CLI to collect the token."""
INTERVAL = 5
"""Seconds the CLI waits between polls, at first."""
SLOW_DOWN = 5
"""Seconds added to the interval each time the CLI polls faster than it (RFC 8628, 3.5)."""
MAX_INTERVAL = 60
POLL_SLACK = timedelta(seconds=1)
"""A poll this much early still counts as on time: the network delays some polls more than others."""
MAX_STARTED_PER_ADDRESS = 30
"""Sign-ins one address may start in ``EXPIRES_IN``; behind a reverse proxy that hides the clients' addresses,
the whole organisation shares it."""
MAX_PENDING = 1000
"""Sign-ins waiting at once, from everywhere: a bound on what anonymous callers can make the app DB hold."""
KEEP_AFTER_EXPIRY = timedelta(days=1)
"""A finished or expired sign-in's row is deleted this long after its expiry (its audit events stay)."""
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE_KEY = b"lapse device sign-in user codes"

ClientName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
"""What the CLI says it runs on (its host name): shown to the person approving, so plain characters only."""


class DeviceStart(BaseModel):
    client_name: ClientName = Field(description="The host name the CLI runs on, shown to the person approving.")


class DeviceAuthorization(BaseModel):
    """RFC 8628's device authorization response."""

    device_code: str
    """What the CLI polls with: a secret of its own, never shown."""
    user_code: str
    """What the person compares (or types): ``XXXX-XXXX``."""
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceToken(BaseModel):
    """RFC 6749's token response: a new API token of the approving person's."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


class DeviceTokenError(Exception):
    """An RFC 8628 / RFC 6749 token error: ``authorization_pending``, ``slow_down``, ``access_denied``,
    ``expired_token``, ``invalid_grant``, ``invalid_request`` or ``unsupported_grant_type``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class TooManySignIns(Refusal):
    """More sign-ins started than ``MAX_STARTED_PER_ADDRESS`` or ``MAX_PENDING`` allow: try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(RefusalKind.UNAVAILABLE, message, retry_after=retry_after)


@dataclass(frozen=True)
class DeviceRequest:
    """What the person approving is shown."""

    id: str
    user_code: str
    client_name: str
    address: str
    created_at: datetime
    expires_at: datetime
    state: str
    scopes: list[Scope]
    """What its token carries: the scopes fixed at its approval, else those an approval by the viewer gives."""


def _now() -> datetime:
    return datetime.now(UTC)


def _device_hash(device_code: str) -> str:
    return hashlib.sha256(device_code.encode()).hexdigest()


def _user_hash(settings: Settings, user_code: str) -> str:
    return hmac.new(derived_key(settings, USER_CODE_KEY), user_code.encode(), hashlib.sha256).hexdigest()


def user_code_of(text: str) -> str | None:
    """``text`` as a user code (``BCDF-GHJK``): any case, with or without the dash or spaces; None if it is not
    one."""
    letters = re.sub(r"[\s-]", "", text).upper()
    if len(letters) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in letters):
        return None
    return f"{letters[:4]}-{letters[4:]}"


def scopes_for(user: User) -> list[Scope]:
    """What a CLI signed in by ``user`` may do: everything they may, admin rights for an admin included."""
    return [Scope.READ, Scope.REQUEST, Scope.APPROVE, *([Scope.ADMIN] if user.is_admin else [])]


# --- the CLI: starting, then polling --------------------------------------------------------------


def start(settings: Settings, body: DeviceStart, *, address: str, verification_uri: str) -> DeviceAuthorization:
    """A new sign-in for the CLI on ``body.client_name``, asked from ``address``; its person approves it at
    ``verification_uri``. Refused (``TooManySignIns``) past the bounds above."""
    now = _now()
    device_code = secrets.token_urlsafe(32)
    with session_scope(settings.db_url) as session:
        gone = now - EXPIRES_IN - KEEP_AFTER_EXPIRY  # by created_at, which is indexed: every start runs this
        session.execute(delete(DeviceSignIn).where(col(DeviceSignIn.created_at) < gone))
        _check_bounds(session, address, now)
        user_code = _new_user_code(settings, session)
        session.add(
            DeviceSignIn(
                id=secrets.token_hex(8),
                device_hash=_device_hash(device_code),
                user_hash=_user_hash(settings, user_code),
                client_name=body.client_name,
                address=address,
                created_at=now,
                expires_at=now + EXPIRES_IN,
                interval=INTERVAL,
            )
        )
    return DeviceAuthorization(
        device_code=device_code,
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=f"{verification_uri}?user_code={user_code}",
        expires_in=int(EXPIRES_IN.total_seconds()),
        interval=INTERVAL,
    )


def _check_bounds(session: Session, address: str, now: datetime) -> None:
    recent = now - EXPIRES_IN
    started = session.exec(
        select(func.count())
        .select_from(DeviceSignIn)
        .where(DeviceSignIn.address == address, col(DeviceSignIn.created_at) > recent)
    ).one()
    if started >= MAX_STARTED_PER_ADDRESS:
        raise TooManySignIns(
            f"{started} sign-ins were started from {address} in the last {EXPIRES_IN.seconds // 60} minutes, "
            "the most allowed: try again in a minute",
            retry_after=60,
        )
    waiting = session.exec(
        select(func.count())
        .select_from(DeviceSignIn)
        .where(DeviceSignIn.state == "pending", col(DeviceSignIn.expires_at) > now)
    ).one()
    if waiting >= MAX_PENDING:
        raise TooManySignIns(f"{waiting} sign-ins are waiting for approval, the most allowed: try again later", 60)


def _new_user_code(settings: Settings, session: Session) -> str:
    for _ in range(10):  # ~2.6e10 codes: a clash with a kept row is already rare
        letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        code = f"{letters[:4]}-{letters[4:]}"
        if session.exec(select(DeviceSignIn.id).where(DeviceSignIn.user_hash == _user_hash(settings, code))).first():
            continue
        return code
    raise Refusal(RefusalKind.UNAVAILABLE, "no free sign-in code was found: try again", retry_after=1)


def exchange(settings: Settings, device_code: str) -> DeviceToken:
    """The token for an approved sign-in, once; otherwise the ``DeviceTokenError`` that tells the CLI to keep
    waiting (``authorization_pending``), to wait longer (``slow_down``), or to stop."""
    now = _now()
    with session_scope(settings.db_url) as session:
        row = session.exec(select(DeviceSignIn).where(DeviceSignIn.device_hash == _device_hash(device_code))).first()
        if row is None:
            raise DeviceTokenError("invalid_grant", "this device code is unknown: start again with `lapse login`")
        if row.state == "used":
            raise DeviceTokenError("invalid_grant", "this device code was already exchanged for a token")
        if row.expires_at <= now:
            raise DeviceTokenError("expired_token", "the sign-in expired before it was approved: start again")
        if row.state == "denied":
            raise DeviceTokenError("access_denied", f"{row.decided_by} denied this sign-in")
        early = row.polled_at is not None and now - row.polled_at < timedelta(seconds=row.interval) - POLL_SLACK
        row.polled_at = now
        if early:
            row.interval = min(row.interval + SLOW_DOWN, MAX_INTERVAL)
        session.add(row)
        waiting = early or row.state == "pending"
    if waiting:  # raised once the poll is recorded: a refusal inside the block would undo it
        if early:
            raise DeviceTokenError("slow_down", f"polled too fast: wait {row.interval} seconds between polls")
        raise DeviceTokenError("authorization_pending", "waiting for its person to approve it")
    with session_scope(settings.db_url) as session:
        # Approved: claim it, so that a second exchange (even at the same moment) finds it used.
        claimed = session.execute(
            update(DeviceSignIn)
            .where(col(DeviceSignIn.id) == row.id, col(DeviceSignIn.state) == "approved")
            .values(state="used")
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise DeviceTokenError("invalid_grant", "this device code was already exchanged for a token")
        person = catalog.find_user(session, row.decided_by or "")
        sign_in = row
    if person is None:
        raise DeviceTokenError("access_denied", f"{sign_in.decided_by} is no longer a Lapse user")
    body = TokenCreate(name=f"lapse CLI on {sign_in.client_name}", scopes=[Scope(s) for s in sign_in.scopes])
    try:
        created = tokens.create_token(settings, person, body)
    except Refusal as refusal:  # no longer active, no longer an admin, too many tokens: the code is used up
        raise DeviceTokenError("access_denied", f"no token was made: {refusal.message}") from None
    with session_scope(settings.db_url) as session:
        session.execute(update(DeviceSignIn).where(col(DeviceSignIn.id) == sign_in.id).values(token_id=created.id))
    return DeviceToken(
        access_token=created.token,
        expires_in=int((created.expires_at - _now()).total_seconds()),
        scope=" ".join(s.value for s in created.scopes),
    )


# --- the person: looking, then deciding ----------------------------------------------------------


def _person(user: User) -> None:
    if user.is_service:
        raise Refusal(
            RefusalKind.FORBIDDEN, f"{user.email} is a service account: only a person may sign a CLI in as themselves"
        )


def _find(settings: Settings, session: Session, user_code: str) -> tuple[str, DeviceSignIn]:
    code = user_code_of(user_code)
    if code is None:
        raise Refusal(
            RefusalKind.INVALID,
            f"{user_code.strip()[:40]!r} is not a sign-in code: it is 8 letters, like BCDF-GHJK, as `lapse login` "
            "shows it",
            field="user_code",
        )
    row = session.exec(select(DeviceSignIn).where(DeviceSignIn.user_hash == _user_hash(settings, code))).first()
    if row is None:
        raise Refusal(
            RefusalKind.NOT_FOUND,
            f"there is no sign-in with the code {code}: check it against what `lapse login` shows",
            field="user_code",
        )
    if row.state == "pending" and row.expires_at <= _now():
        raise Refusal(
            RefusalKind.GONE,
            f"the sign-in with the code {code} expired (after {EXPIRES_IN.seconds // 60} minutes): run `lapse login` "
            "again for a new code",
            field="user_code",
        )
    return code, row


def _shown(code: str, row: DeviceSignIn, scopes: list[Scope]) -> DeviceRequest:
    return DeviceRequest(
        id=row.id,
        user_code=code,
        client_name=row.client_name,
        address=row.address,
        created_at=row.created_at,
        expires_at=row.expires_at,
        state=row.state,
        scopes=scopes,
    )


def _decided(code: str, row: DeviceSignIn) -> Refusal:
    done = {"approved": "was approved", "used": "was approved and is done", "denied": "was denied"}[row.state]
    return Refusal(RefusalKind.CONFLICT, f"the sign-in with the code {code} {done} already", field="user_code")


def look_up(settings: Settings, user: User, user_code: str) -> DeviceRequest:
    """The waiting sign-in with ``user_code``, as ``user`` (a person) would approve it."""
    _person(user)
    with session_scope(settings.db_url, write=False) as session:
        code, row = _find(settings, session, user_code)
    if row.state != "pending":
        raise _decided(code, row)
    return _shown(code, row, scopes_for(user))


def decide(settings: Settings, user: User, user_code: str, *, approve: bool) -> DeviceRequest:
    """Approve (the CLI's next poll gets a token of ``user``'s) or deny the waiting sign-in with ``user_code``;
    audited either way."""
    _person(user)
    now = _now()
    with session_scope(settings.db_url) as session:
        code, row = _find(settings, session, user_code)
        if row.state != "pending":
            raise _decided(code, row)
        scopes = scopes_for(user) if approve else []
        row.state = "approved" if approve else "denied"
        row.decided_by = user.email
        row.decided_at = now
        row.scopes = [s.value for s in scopes]
        session.add(row)
        details = {"client_name": row.client_name, "address": row.address, "scopes": row.scopes}
        action = "device_sign_in.approved" if approve else "device_sign_in.denied"
        append_audit(session, [AuditEntry(actor=user.email, action=action, target=f"device:{row.id}", details=details)])
        return _shown(code, row, scopes)
