"""Browser sessions (``starter/services/sessions.py``): a new random id at every sign-in, kept only as a hash,
ended by sign-out, by idleness, by age, and by the user's deactivation; the cookie's flags; the settings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlmodel import col, select, update
from starlette.responses import Response

from access.errors import Refusal
from activities.directory import _sync
from activities.directory_sources import read_sources
from starter.services import sessions, tokens
from starter.services.sessions import COOKIE_NAME, cookie_options, end_session, session_user, start_session
from store import catalog
from store.db import session_scope
from store.org import DEMO_ORG
from store.settings import Settings
from store.tables import AuditEvent, User, WebSession
from tests.api.identities import mint, offline_settings
from tests.conftest import load_into

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """Each test's "now" is taken when it starts: lifetimes are checked against the real clock, and a slow run
    may reach a test minutes after this module was imported."""
    global NOW
    NOW = datetime.now(UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return offline_settings(tmp_path)


def _row(settings: Settings, session_id: str) -> WebSession:
    with session_scope(settings.db_url, write=False) as session:
        row = session.get(WebSession, hashlib.sha256(session_id.encode()).hexdigest())
    assert row is not None
    return row


def _age(settings: Settings, session_id: str, **values: datetime) -> None:
    key = hashlib.sha256(session_id.encode()).hexdigest()
    with session_scope(settings.db_url) as session:
        session.execute(update(WebSession).where(col(WebSession.id) == key).values(**values))


def test_every_sign_in_gets_a_new_id_and_the_db_keeps_only_its_hash(settings: Settings) -> None:
    first = start_session(settings, "Alan@Example.com", auth_time=NOW - timedelta(minutes=3))
    second = start_session(settings, "alan@example.com", auth_time=NOW)
    assert first.id != second.id and first.csrf_token != second.csrf_token
    assert len(first.id) >= 43 and len(first.csrf_token) >= 43
    info = session_user(settings, first.id)
    assert info is not None and info.email == "alan@example.com" and info.csrf_token == first.csrf_token
    assert info.auth_time is not None and abs(info.auth_time - (NOW - timedelta(minutes=3))) < timedelta(seconds=1)
    assert abs(info.expires_at - (NOW + timedelta(days=1))) < timedelta(minutes=1)

    with session_scope(settings.db_url, write=False) as session:
        rows = session.exec(select(WebSession)).all()
    assert {row.id for row in rows} == {hashlib.sha256(s.id.encode()).hexdigest() for s in (first, second)}
    stored = Path(settings.db_url.removeprefix("sqlite:///"))
    dump = b"".join(path.read_bytes() for path in stored.parent.glob(stored.name + "*"))
    assert first.id.encode() not in dump and second.id.encode() not in dump


def test_signing_out_ends_the_session_wherever_its_cookie_is(settings: Settings) -> None:
    started = start_session(settings, "alan@example.com", auth_time=NOW)
    other = start_session(settings, "alan@example.com", auth_time=NOW)
    end_session(settings, started.id)
    assert session_user(settings, started.id) is None
    assert session_user(settings, other.id) is not None  # another browser stays signed in
    end_session(settings, started.id)  # twice: nothing more happens
    end_session(settings, "never-issued")
    assert sessions.end_user_sessions(settings, "alan@example.com") == 1
    assert session_user(settings, other.id) is None
    with session_scope(settings.db_url, write=False) as session:
        actions = list(session.exec(select(AuditEvent.action).where(AuditEvent.target == "alan@example.com")))
    assert actions == ["session.started", "session.started", "session.ended", "session.ended"]


def test_an_idle_session_ends(settings: Settings) -> None:
    started = start_session(settings, "alan@example.com", auth_time=NOW)
    _age(settings, started.id, last_seen_at=NOW - settings.session_idle + timedelta(minutes=1))
    assert session_user(settings, started.id) is not None  # idle for a little under 8 hours: still there
    _age(settings, started.id, last_seen_at=NOW - settings.session_idle - timedelta(seconds=1))
    assert session_user(settings, started.id) is None


def test_a_session_in_use_still_ends_at_its_maximum_age(settings: Settings) -> None:
    started = start_session(settings, "alan@example.com", auth_time=NOW)
    _age(settings, started.id, created_at=NOW - timedelta(days=1) + timedelta(minutes=1), last_seen_at=NOW)
    assert session_user(settings, started.id) is not None
    _age(settings, started.id, created_at=NOW - timedelta(days=1) - timedelta(seconds=1), last_seen_at=NOW)
    assert session_user(settings, started.id) is None


def test_use_slides_the_idle_time_at_most_once_a_minute(settings: Settings) -> None:
    started = start_session(settings, "alan@example.com", auth_time=NOW)
    seen = _row(settings, started.id).last_seen_at
    assert session_user(settings, started.id) is not None
    assert _row(settings, started.id).last_seen_at == seen  # used again at once: nothing written
    _age(settings, started.id, last_seen_at=NOW - timedelta(hours=7))
    assert session_user(settings, started.id) is not None
    assert datetime.now(UTC) - _row(settings, started.id).last_seen_at < timedelta(seconds=30)


@pytest.mark.every_app_db
def test_a_provider_that_does_not_say_when_leaves_the_sign_in_time_unknown(tmp_path: Path, app_db: str) -> None:
    """No ``auth_time`` in the ID token: the session says it does not know (never "just now", which would pass
    any check for a recent sign-in)."""
    settings = offline_settings(tmp_path, app_db)
    started = start_session(settings, "alan@example.com", auth_time=None)
    info = session_user(settings, started.id)
    assert info is not None and info.email == "alan@example.com" and info.auth_time is None
    assert _row(settings, started.id).auth_time is None


def test_a_deactivated_users_sessions_end_for_good(settings: Settings) -> None:
    started = start_session(settings, "alan@example.com", auth_time=NOW)

    def set_active(active: bool) -> None:
        with session_scope(settings.db_url) as session:
            session.execute(update(User).where(col(User.email) == "alan@example.com").values(active=active))

    set_active(False)
    assert session_user(settings, started.id) is None
    set_active(True)  # back again: he signs in again, the old session stays ended
    assert session_user(settings, started.id) is None
    assert _row(settings, started.id).ended_at is not None


def test_only_active_people_start_sessions(settings: Settings) -> None:
    with pytest.raises(Refusal, match=r"nobody@example\.com is not an active Lapse user"):
        start_session(settings, "nobody@example.com", auth_time=NOW)
    with session_scope(settings.db_url) as session:
        session.add(User(email="ci@example.com", kind="service", source="service-account"))
        session.execute(update(User).where(col(User.email) == "ken@example.com").values(active=False))
    with pytest.raises(Refusal, match="service account"):
        start_session(settings, "ci@example.com", auth_time=NOW)
    with pytest.raises(Refusal, match="not an active"):
        start_session(settings, "ken@example.com", auth_time=NOW)
    with pytest.raises(ValueError, match="timezone"):
        start_session(settings, "alan@example.com", auth_time=datetime(2026, 1, 1))
    later = start_session(settings, "alan@example.com", auth_time=NOW + timedelta(hours=1))  # a clock ahead
    info = session_user(settings, later.id)
    assert info is not None and info.auth_time is not None and info.auth_time <= datetime.now(UTC)
    for bad in ("", "x" * 500, "not-a-session"):
        assert session_user(settings, bad) is None


def _set_cookie(settings: Settings) -> SimpleCookie:
    response = Response()
    sessions.set_session_cookie(response, settings, start_session(settings, "alan@example.com", auth_time=NOW))
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


def test_the_cookie_is_http_only_same_site_lax_and_secure_over_https(tmp_path: Path, settings: Settings) -> None:
    plain = _set_cookie(settings)[COOKIE_NAME]
    assert plain["httponly"] and plain["samesite"].lower() == "lax" and plain["path"] == "/"
    assert not plain["secure"]  # http://127.0.0.1:8000: a browser would drop a Secure cookie there
    assert plain["max-age"] == str(24 * 3600)
    https = offline_settings(tmp_path / "https", public_url="https://lapse.example.com")
    secure = _set_cookie(https)[COOKIE_NAME]
    assert secure["secure"] and secure["httponly"] and secure["samesite"].lower() == "lax"
    assert cookie_options(https) == {"httponly": True, "samesite": "lax", "secure": True, "path": "/", "max_age": 86400}

    cleared = Response()
    sessions.clear_session_cookie(cleared, https)
    gone: SimpleCookie = SimpleCookie()
    gone.load(cleared.headers["set-cookie"])
    assert gone[COOKIE_NAME].value == "" and gone[COOKIE_NAME]["max-age"] == "0" and gone[COOKIE_NAME]["secure"]


def test_sign_in_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.auth == "oidc" and defaults.trusted_proxies == [] and defaults.public_url is None
    assert (defaults.session_idle, defaults.session_max) == (timedelta(hours=8), timedelta(days=1))
    assert (defaults.token_default_lifetime, defaults.token_max_lifetime) == (timedelta(days=90), timedelta(days=365))
    assert defaults.external_url == "http://127.0.0.1:8000"

    monkeypatch.setenv("LAPSE_TRUSTED_PROXIES", "10.0.0.5, 10.1.0.0/16,::1")
    monkeypatch.setenv("LAPSE_PUBLIC_URL", "https://lapse.example.com/")
    monkeypatch.setenv("LAPSE_SESSION_IDLE", "PT30M")
    configured = Settings(_env_file=None)  # type: ignore[call-arg]
    assert configured.trusted_proxies == ["10.0.0.5", "10.1.0.0/16", "::1"]
    assert configured.external_url == configured.public_url == "https://lapse.example.com"
    assert configured.session_idle == timedelta(minutes=30)
    monkeypatch.setenv("LAPSE_TRUSTED_PROXIES", '["192.168.1.1"]')
    assert Settings(_env_file=None).trusted_proxies == ["192.168.1.1"]  # type: ignore[call-arg]

    for wrong, says in (
        ({"trusted_proxies": ["proxy.example.com"]}, "not an IP address"),
        ({"public_url": "lapse.example.com"}, "not an http"),
        ({"auth": "header"}, "auth"),
        ({"session_idle": "P2D"}, "session_idle is longer"),
        ({"token_default_lifetime": "P400D"}, "token_default_lifetime is longer"),
    ):
        with pytest.raises(ValidationError, match=says):
            Settings(_env_file=None, **wrong)  # type: ignore[call-arg, arg-type]


# --- deactivation ends tokens and sessions for good ---------------------------------------------------------


def _signed_in(settings: Settings, email: str) -> tuple[str, str]:
    """A browser session and an API token of ``email``'s."""
    return start_session(settings, email, auth_time=NOW).id, mint(settings, email, "read", name=f"{email}'s")


def _alive(settings: Settings, credentials: tuple[str, str]) -> tuple[bool, bool]:
    """Whether the session, and the token, still sign anyone in."""
    session_id, token = credentials
    return session_user(settings, session_id) is not None, tokens.token_user(settings, token) is not None


def _ended(settings: Settings, email: str) -> list[tuple[str, str, str, str]]:
    """The audit events that ended ``email``'s credentials: action, actor, target kind, reason."""
    with session_scope(settings.db_url, write=False) as session:
        events = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.action).in_(["token.revoked", "session.ended"]))
            .order_by(col(AuditEvent.id))
        ).all()
    return [
        (e.action, e.actor, e.target.partition(":")[0] if e.target.startswith("token:") else "user", e.reason)
        for e in events
        if e.target == email or e.details.get("owner") == email
    ]


def _set_active(settings: Settings, email: str, active: bool) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(update(User).where(col(User.email) == email).values(active=active))


def test_a_user_the_organisation_file_deactivates_keeps_no_token_or_session(settings: Settings) -> None:
    alan, barbara = _signed_in(settings, "alan@example.com"), _signed_in(settings, "barbara@example.com")
    entry = {"email": "alan@example.com", "manager": "linus@example.com"}
    load_into(settings, {"users": [{**entry, "active": False}]})
    load_into(settings, {"users": [entry]})  # back again, before he used either
    assert _alive(settings, alan) == (False, False)
    assert _alive(settings, barbara) == (True, True)
    why = "deactivated by the organisation file"
    assert _ended(settings, "alan@example.com") == [
        ("token.revoked", "lapse", "token", why),
        ("session.ended", "lapse", "user", why),
    ]


def test_a_directory_leaver_keeps_no_token_or_session(settings: Settings, tmp_path: Path) -> None:
    alan, barbara = _signed_in(settings, "alan@example.com"), _signed_in(settings, "barbara@example.com")
    org = yaml.safe_load(DEMO_ORG.read_text())
    for user in org["users"]:
        if user["email"] == "alan@example.com":
            user["active"] = False
    left = tmp_path / "left.yaml"
    left.write_text(yaml.safe_dump(org))
    for org_file in (left, DEMO_ORG):  # he leaves, then comes back
        with session_scope(settings.db_url) as session:
            _sync(session, read_sources(settings.db_url, org_file), "test", datetime.now(UTC))
    assert _alive(settings, alan) == (False, False)
    assert _alive(settings, barbara) == (True, True)
    why = "left: disabled in file"
    assert _ended(settings, "alan@example.com") == [
        ("token.revoked", "lapse", "token", why),
        ("session.ended", "lapse", "user", why),
    ]


def test_a_deactivated_service_accounts_tokens_stay_revoked(settings: Settings) -> None:
    with session_scope(settings.db_url, write=False) as session:
        ada = catalog.find_user(session, "ada@example.com")
    assert ada is not None
    tokens.create_service_account(settings, ada, tokens.ServiceAccountCreate(email="ci@example.com", name="CI"))
    body = tokens.TokenCreate(name="deploy", scopes=[tokens.Scope.READ])
    token = tokens.create_service_token(settings, ada, "ci@example.com", body).token
    out = tokens.deactivate_service_account(settings, ada, "ci@example.com")
    assert [t.state for t in out.tokens] == ["revoked"]
    _set_active(settings, "ci@example.com", True)  # brought back (by hand: there is no way in the API)
    assert tokens.token_user(settings, token) is None
    assert _ended(settings, "ci@example.com") == [
        ("token.revoked", "ada@example.com", "token", "service account deactivated")
    ]


def test_deactivated_any_other_way_the_first_use_ends_both_for_good(settings: Settings) -> None:
    alan = _signed_in(settings, "alan@example.com")
    _set_active(settings, "alan@example.com", False)  # not through any of the ways above (a restore, by hand)
    assert tokens.token_user(settings, alan[1]) is None
    _set_active(settings, "alan@example.com", True)
    assert _alive(settings, alan) == (False, False)
    why = "its owner is no longer active"
    assert _ended(settings, "alan@example.com") == [
        ("token.revoked", "lapse", "token", why),
        ("session.ended", "lapse", "user", why),
    ]
