"""Signing the CLI in through a browser: RFC 8628's device authorization flow, hosted by Lapse itself.

``lapse login`` asks for a sign-in (``start``) and shows its person a short code and a URL; the person opens the
URL in a browser signed in to Lapse the usual way (OIDC or the SSO proxy), types the code, checks what is asked,
and approves or denies it (``decide``); meanwhile the CLI polls (``exchange``), and after an approval its next
poll gets a new API token of the person's, once. Lapse hosts the flow rather than the identity provider, so it
works with every provider (most offer no device flow, or one Lapse's client may not use) and behind the proxy,
and the CLI never sees the provider or Lapse's client secret.

Neither code is stored: the device code (256 random bits, what the CLI holds) as its SHA-256, the user code
(what the person types: 8 of 20 consonants, about 35 bits) as an HMAC under a key derived from Lapse's secret
key, so that a copy of the app DB gives neither back. (A little over 400 lines: the flow's three steps and the
checks each makes against phishing belong together; its rate limits are in ``device_limits``.)

Against remote phishing (RFC 8628, 5.4: someone starts a sign-in and sends a person the link to approve it),
a link's code is a hint, never enough: the person types the code their own terminal shows; its token lasts
``device_token_lifetime`` (shorter than other tokens'), carries ``admin`` only when an admin ticks it (with a
recent sign-in, where Lapse can tell), and the page warns when the sign-in was asked from another network than
the approving browser's. Its bounds, and those on guessing codes, are in ``starter.services.device_limits``.
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
from sqlmodel import Session, col, select

from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.services import device_limits, tokens
from starter.services.audit import refused
from starter.services.oidc import derived_key
from starter.services.recent_sign_in import SignIn, reauthenticate_url
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
ADMIN_SIGN_IN_WITHIN = timedelta(minutes=10)
"""Approving with admin rights from a browser session (OIDC) needs a sign-in at the provider this recent."""
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
    """``verification_uri`` with the code in it (RFC 8628 compatibility): a hint only. The page opened with it
    still asks for the code the terminal shows, so a link someone else sent approves nothing by a click."""
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
    """What its token carries: the scopes fixed at its approval, else those an approval by the viewer gives
    without ticking admin rights."""


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


def scopes_for(user: User, *, admin: bool = False) -> list[Scope]:
    """What a CLI signed in by ``user`` may do: everything they may, admin rights only when asked for."""
    return [Scope.READ, Scope.REQUEST, Scope.APPROVE, *([Scope.ADMIN] if admin else [])]


# --- the CLI: starting, then polling --------------------------------------------------------------


def start(settings: Settings, body: DeviceStart, *, address: str, verification_uri: str) -> DeviceAuthorization:
    """A new sign-in for the CLI on ``body.client_name``, asked from ``address``; its person approves it at
    ``verification_uri``. Refused (``TooManySignIns``) past ``device_limits``' bounds."""
    now = _now()
    device_code = secrets.token_urlsafe(32)
    with session_scope(settings.db_url) as session:
        gone = now - EXPIRES_IN - KEEP_AFTER_EXPIRY  # by created_at, which is indexed: every start runs this
        session.execute(delete(DeviceSignIn).where(col(DeviceSignIn.created_at) < gone))
        device_limits.check_started(session, address, now, EXPIRES_IN)
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
    body = TokenCreate(
        name=f"lapse CLI on {sign_in.client_name}",
        scopes=[Scope(s) for s in sign_in.scopes],
        expires_in=settings.device_token_lifetime,
    )
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


# --- the person: typing the code, looking, then deciding ----------------------------------------


def _person(user: User) -> None:
    if user.is_service:
        raise Refusal(
            RefusalKind.FORBIDDEN, f"{user.email} is a service account: only a person may sign a CLI in as themselves"
        )


def _code(user_code: str) -> str:
    code = user_code_of(user_code)
    if code is None:
        raise Refusal(
            RefusalKind.INVALID,
            f"{user_code.strip()[:40]!r} is not a sign-in code: it is 8 letters, like BCDF-GHJK, as `lapse login` "
            "shows it",
            field="user_code",
        )
    return code


def _check_link(code: str, link_code: str | None) -> None:
    """Refuse a typed code that is not the one in the link the page was opened with (compared in constant time:
    the link may be someone else's, and how long the comparison takes must not tell anything of it)."""
    if not link_code:
        return
    linked = user_code_of(link_code) or ""
    if not hmac.compare_digest(code.encode(), linked.encode()):
        raise Refusal(
            RefusalKind.INVALID,
            f"the code you typed, {code}, is not the one in the link you opened: if your terminal shows {code}, "
            "approve it now; if you did not run `lapse login` yourself, someone may have sent you that link to get "
            "you to sign their CLI in as you: ignore it",
            field="user_code",
        )


def _find(settings: Settings, user: User, user_code: str) -> tuple[str, DeviceSignIn]:
    """The sign-in with ``user_code``, as ``user`` may look it up: refused for a while after too many unknown
    codes (``device_limits``), whatever the code."""
    code = _code(user_code)
    now = _now()
    with session_scope(settings.db_url, write=False) as session:
        device_limits.check_unknown_codes(session, user, now)
        row = session.exec(select(DeviceSignIn).where(DeviceSignIn.user_hash == _user_hash(settings, code))).first()
    if row is None:
        device_limits.record_unknown_code(settings, user, now)
        raise Refusal(
            RefusalKind.NOT_FOUND,
            f"there is no sign-in with the code {code}: check it against what `lapse login` shows",
            field="user_code",
        )
    if row.state == "pending" and row.expires_at <= now:
        raise _expired(code)
    return code, row


def _expired(code: str) -> Refusal:
    return Refusal(
        RefusalKind.GONE,
        f"the sign-in with the code {code} expired (after {EXPIRES_IN.seconds // 60} minutes): run `lapse login` "
        "again for a new code",
        field="user_code",
    )


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


def look_up(settings: Settings, user: User, user_code: str, *, link_code: str | None = None) -> DeviceRequest:
    """The waiting sign-in with ``user_code`` (typed by ``user``, a person), as they would approve it; refused
    when the page was opened with a link for another code (``link_code``)."""
    _person(user)
    _check_link(_code(user_code), link_code)
    code, row = _find(settings, user, user_code)
    if row.state != "pending":
        raise _decided(code, row)
    return _shown(code, row, scopes_for(user))


def _require_recent_sign_in(settings: Settings, user: User, sign_in: SignIn | None, row: DeviceSignIn) -> None:
    """Admin rights for a CLI need a recent sign-in from a browser session (OIDC), which knows when its person
    last authenticated; the SSO proxy's header cannot tell, so it is taken as it is."""
    if sign_in is None or sign_in.via != "session" or sign_in.within(ADMIN_SIGN_IN_WITHIN, now=_now()):
        return
    url = reauthenticate_url(ADMIN_SIGN_IN_WITHIN, "/device")
    minutes = ADMIN_SIGN_IN_WITHIN.seconds // 60
    refusal = Refusal(
        RefusalKind.REAUTHENTICATE,
        f"signing a CLI in with admin rights needs a sign-in at most {minutes} minutes old and yours is older: sign "
        f"in again at {url}, then type the code again (the CLI waits until its code expires)",
        extra={"reauthenticate_url": url, "max_age": int(ADMIN_SIGN_IN_WITHIN.total_seconds())},
    )
    raise refused(settings, user.email, "device_sign_in.approve", f"device:{row.id}", refusal)


def decide(
    settings: Settings,
    user: User,
    user_code: str,
    *,
    approve: bool,
    admin: bool = False,
    sign_in: SignIn | None = None,
) -> DeviceRequest:
    """Approve (the CLI's next poll gets a token of ``user``'s; with ``admin`` rights only when asked for, by an
    admin signed in recently enough: ``sign_in``) or deny the waiting sign-in with ``user_code``; audited either
    way. Of two decisions at the same moment, one wins and the other is refused."""
    _person(user)
    if approve and admin and not user.is_admin:
        raise Refusal(
            RefusalKind.FORBIDDEN, f"{user.email} is not an admin: a CLI signed in as them cannot have admin rights"
        )
    code, row = _find(settings, user, user_code)
    if row.state != "pending":
        raise _decided(code, row)
    if approve and admin:
        _require_recent_sign_in(settings, user, sign_in, row)
    now = _now()
    scopes = scopes_for(user, admin=admin) if approve else []
    state = "approved" if approve else "denied"
    with session_scope(settings.db_url) as session:
        # Only a sign-in still waiting: of two decisions at the same moment, the second changes nothing.
        claimed = session.execute(
            update(DeviceSignIn)
            .where(
                col(DeviceSignIn.id) == row.id,
                col(DeviceSignIn.state) == "pending",
                col(DeviceSignIn.expires_at) > now,
            )
            .values(state=state, decided_by=user.email, decided_at=now, scopes=[s.value for s in scopes])
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise _lost(code, session.get(DeviceSignIn, row.id))
        details = {"client_name": row.client_name, "address": row.address, "scopes": [s.value for s in scopes]}
        action = f"device_sign_in.{state}"
        append_audit(session, [AuditEntry(actor=user.email, action=action, target=f"device:{row.id}", details=details)])
    row.state, row.decided_by, row.decided_at = state, user.email, now
    return _shown(code, row, scopes)


def _lost(code: str, row: DeviceSignIn | None) -> Refusal:
    """Why a decision changed nothing: another one landed first, or the sign-in expired meanwhile."""
    if row is None or row.state == "pending":
        return _expired(code)
    return _decided(code, row)
