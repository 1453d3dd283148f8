"""The CLI's sign-in through a browser (``/auth/device``, ``/auth/device/token``, the ``/device`` page): RFC 8628's
answers while it waits, one token for one approval, nothing a copy of the app DB could use, and only a person in
a browser may approve. The CLI's side is in ``tests/test_cli_login.py``; both, for real, in
``tests/web/test_device_sign_in.py``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlmodel import SQLModel, col, select, update

from access.errors import Refusal, RefusalKind
from starter.services import device, tokens
from store import catalog
from store.db import engine_for, session_scope
from store.settings import Settings
from store.tables import AuditEvent, DeviceSignIn, User
from tests.api.answers import problem
from tests.api.identities import (
    Caller,
    client,
    mint,
    offline_app,
    offline_settings,
    proxy_caller,
    session_caller,
    token_caller,
)

CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


@pytest.fixture
def offline(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation behind the SSO proxy (people approve through it), no Temporal."""
    return offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])


@pytest_asyncio.fixture
async def http(offline: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(offline)) as http:
        yield http


def browser(settings: Settings, email: str) -> Caller:
    """A person's browser behind the proxy, sending the CSRF token its pages carry."""
    return proxy_caller(email, settings)


async def start(http: httpx.AsyncClient, client_name: str = "alans-laptop") -> dict[str, Any]:
    started = await http.post("/auth/device", json={"client_name": client_name})
    assert started.status_code == 200, started.text
    answer: dict[str, Any] = started.json()
    return answer


async def poll(http: httpx.AsyncClient, device_code: str, **more: str) -> httpx.Response:
    return await http.post("/auth/device/token", data={"device_code": device_code, **more})


def error_of(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    error: str = response.json()["error"]
    assert response.json()["error_description"]
    return error


def a_while_since_the_last_poll(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(update(DeviceSignIn).values(polled_at=datetime.now(UTC) - timedelta(minutes=1)))


async def decide(http: httpx.AsyncClient, who: Caller, user_code: str, decision: str) -> httpx.Response:
    return await who.call(http, "POST", "/device", data={"user_code": user_code, "decision": decision})


async def alan_approves(settings: Settings, http: httpx.AsyncClient, user_code: str) -> None:
    approved = await decide(http, browser(settings, "alan@example.com"), user_code, "approve")
    assert approved.status_code == 200, approved.text


def audited(settings: Settings) -> list[tuple[str, str]]:
    with session_scope(settings.db_url, write=False) as session:
        return [(e.action, e.actor) for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


async def test_the_cli_waits_then_collects_one_token_for_one_approval(
    offline: Settings, http: httpx.AsyncClient
) -> None:
    started = await start(http)
    assert CODE.fullmatch(started["user_code"]) and len(started["device_code"]) >= 43
    assert started["verification_uri"] == "http://lapse.test/device"
    assert started["verification_uri_complete"] == f"http://lapse.test/device?user_code={started['user_code']}"
    assert (started["expires_in"], started["interval"]) == (600, 5)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"

    alan = browser(offline, "alan@example.com")
    shown = await alan.call(http, "GET", f"/device?user_code={started['user_code']}")
    assert shown.status_code == 200, shown.text
    assert "Sign in the Lapse CLI on <q>alans-laptop</q>?" in shown.text and started["user_code"] in shown.text
    assert "127.0.0.1" in shown.text and "<code>approve</code>" in shown.text and "<code>admin</code>" not in shown.text
    approved = await decide(http, alan, started["user_code"], "approve")
    assert approved.status_code == 200 and "Approved." in approved.text

    a_while_since_the_last_poll(offline)
    collected = await poll(http, started["device_code"], grant_type=device.DEVICE_GRANT_TYPE)
    assert collected.status_code == 200, collected.text
    assert collected.headers["cache-control"] == "no-store"
    token = collected.json()
    assert token["token_type"] == "Bearer" and token["scope"] == "read request approve"
    assert abs(token["expires_in"] - timedelta(days=90).total_seconds()) < 60  # the personal tokens' default
    me = await token_caller(token["access_token"]).call(http, "GET", "/api/me")
    assert me.json()["email"] == "alan@example.com" and me.json()["scopes"] == ["read", "request", "approve"]
    [made] = tokens.list_tokens(offline, _user(offline, "alan@example.com"))
    assert made.name == "lapse CLI on alans-laptop" and made.created_by == "alan@example.com"

    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "invalid_grant"  # used up
    again = await alan.call(http, "GET", f"/device?user_code={started['user_code']}")
    assert again.status_code == 409 and "already" in again.text
    assert [a for a in audited(offline) if a[0].startswith(("device", "token"))] == [
        ("device_sign_in.approved", "alan@example.com"),
        ("token.created", "alan@example.com"),
    ]


async def test_an_admin_s_cli_gets_the_admin_scope(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http, "ada-desktop")
    shown = await browser(offline, "ada@example.com").call(http, "GET", f"/device?user_code={started['user_code']}")
    assert "<code>admin</code>" in shown.text
    assert (await decide(http, browser(offline, "ada@example.com"), started["user_code"], "approve")).status_code == 200
    collected = await poll(http, started["device_code"])
    assert collected.json()["scope"] == "read request approve admin"


async def test_polling_faster_than_the_interval_is_told_to_slow_down(
    offline: Settings, http: httpx.AsyncClient
) -> None:
    started = await start(http)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"
    assert error_of(await poll(http, started["device_code"])) == "slow_down"
    with session_scope(offline.db_url) as session:
        [row] = session.exec(select(DeviceSignIn)).all()
        assert row.interval == 10  # 5 more: as the CLI now waits
        row.polled_at = datetime.now(UTC) - timedelta(seconds=7)  # on time before, too soon now
        session.add(row)
    assert error_of(await poll(http, started["device_code"])) == "slow_down"
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"


async def test_a_denied_sign_in_gets_no_token(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    alan = browser(offline, "alan@example.com")
    denied = await decide(http, alan, started["user_code"], "deny")
    assert denied.status_code == 200 and "Denied." in denied.text
    assert error_of(await poll(http, started["device_code"])) == "access_denied"
    twice = await decide(http, alan, started["user_code"], "approve")
    assert twice.status_code == 409 and "was denied already" in twice.text
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "access_denied"
    assert ("device_sign_in.denied", "alan@example.com") in audited(offline)
    assert tokens.list_tokens(offline, _user(offline, "alan@example.com")) == []


async def test_an_expired_sign_in_is_refused_on_both_sides(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    with session_scope(offline.db_url) as session:
        session.execute(update(DeviceSignIn).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert error_of(await poll(http, started["device_code"])) == "expired_token"
    alan = browser(offline, "alan@example.com")
    shown = await alan.call(http, "GET", f"/device?user_code={started['user_code']}")
    assert shown.status_code == 410 and "expired" in shown.text and "lapse login" in shown.text
    late = await decide(http, alan, started["user_code"], "approve")
    assert late.status_code == 410
    assert tokens.list_tokens(offline, _user(offline, "alan@example.com")) == []


async def test_an_approval_not_collected_in_time_expires_too(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    with session_scope(offline.db_url) as session:
        session.execute(update(DeviceSignIn).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert error_of(await poll(http, started["device_code"])) == "expired_token"


def _everything_stored(settings: Settings) -> str:
    """Every row of every table, as text (and on SQLite every byte of the database files)."""
    seen = []
    with engine_for(settings.db_url).connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            seen += [repr(tuple(row)) for row in connection.execute(table.select())]
    if settings.db_url.startswith("sqlite:///"):
        database = Path(settings.db_url.removeprefix("sqlite:///"))
        for path in database.parent.glob(database.name + "*"):
            seen.append(path.read_bytes().decode("latin-1"))
    return "\n".join(seen)


async def test_neither_code_nor_the_token_is_stored(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    token = (await poll(http, started["device_code"])).json()["access_token"]
    stored = _everything_stored(offline)
    assert "alans-laptop" in stored  # the scan sees the sign-in's row
    for secret in (started["device_code"], started["user_code"], started["user_code"].replace("-", ""), token):
        assert secret not in stored


async def test_only_a_person_in_a_browser_may_approve(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    code = started["user_code"]
    for scopes in (("approve",), ("read", "request", "approve")):
        with_token = token_caller(mint(offline, "alan@example.com", *scopes))
        refused = await with_token.call(http, "POST", "/device", data={"user_code": code, "decision": "approve"})
        assert refused.status_code == 403 and "sign in to do this" in refused.text
    ada = _user(offline, "ada@example.com")
    tokens.create_service_account(offline, ada, tokens.ServiceAccountCreate(email="ci@example.com", name="CI"))
    service_token = tokens.create_service_token(
        offline, ada, "ci@example.com", tokens.TokenCreate(name="ci", scopes=[tokens.Scope.APPROVE])
    ).token
    refused = await token_caller(service_token).call(
        http, "POST", "/device", data={"user_code": code, "decision": "approve"}
    )
    assert refused.status_code == 403
    # Nor may a service account through the service itself, however it got there.
    service_account = _user(offline, "ci@example.com")
    for attempt in (
        lambda: device.decide(offline, service_account, code, approve=True),
        lambda: device.look_up(offline, service_account, code),
    ):
        with pytest.raises(Refusal) as refusal:
            attempt()
        assert refusal.value.kind is RefusalKind.FORBIDDEN and "service account" in refusal.value.message
    assert error_of(await poll(http, started["device_code"])) == "authorization_pending"  # still waiting


async def test_codes_typed_by_hand_and_bad_ones(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    alan = browser(offline, "alan@example.com")
    form = await alan.call(http, "GET", "/device")
    assert form.status_code == 200 and 'name="user_code"' in form.text
    typed = started["user_code"].replace("-", " ").lower()
    assert (await alan.call(http, "GET", "/device", params={"user_code": typed})).status_code == 200
    not_a_code = await alan.call(http, "GET", "/device", params={"user_code": "hello"})
    assert not_a_code.status_code == 422 and "is not a sign-in code" in not_a_code.text
    assert 'aria-invalid="true"' in not_a_code.text and 'value="hello"' in not_a_code.text
    unknown = "BBBB-BBBB" if started["user_code"] != "BBBB-BBBB" else "CCCC-CCCC"
    missing = await alan.call(http, "GET", "/device", params={"user_code": unknown})
    assert missing.status_code == 404 and f"no sign-in with the code {unknown}" in missing.text
    undecided = await alan.call(http, "POST", "/device", data={"user_code": started["user_code"], "decision": "maybe"})
    assert undecided.status_code == 422 and "decision" in undecided.text

    assert error_of(await http.post("/auth/device/token", json={})) == "invalid_request"
    assert error_of(await http.post("/auth/device/token", json={"device_code": "nope"})) == "invalid_grant"
    wrong_grant = await poll(http, started["device_code"], grant_type="authorization_code")
    assert error_of(wrong_grant) == "unsupported_grant_type"
    as_json = await http.post("/auth/device/token", json={"device_code": started["device_code"]})
    assert error_of(as_json) == "authorization_pending"


async def test_starting_says_what_is_wrong_and_is_bounded(
    offline: Settings, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ({}, {"client_name": ""}, {"client_name": "x" * 101}, {"client_name": "laptop\n(approved by IT)"}):
        assert "client_name" in problem(await http.post("/auth/device", json=bad), 422, "client_name")
    monkeypatch.setattr(device, "MAX_STARTED_PER_ADDRESS", 3)
    for _ in range(3):
        await start(http)
    too_many = await http.post("/auth/device", json={"client_name": "laptop"})
    assert "from 127.0.0.1" in problem(too_many, 429) and too_many.headers["retry-after"] == "60"
    async with client(offline_app(offline), address="10.1.2.3") as elsewhere:
        assert (await elsewhere.post("/auth/device", json={"client_name": "laptop"})).status_code == 200
    monkeypatch.setattr(device, "MAX_PENDING", 4)
    async with client(offline_app(offline), address="10.1.2.4") as third:
        assert "waiting for approval" in problem(await third.post("/auth/device", json={"client_name": "x"}), 429)


async def test_an_approval_whose_person_left_makes_no_token(offline: Settings, http: httpx.AsyncClient) -> None:
    started = await start(http)
    await alan_approves(offline, http, started["user_code"])
    with session_scope(offline.db_url) as session:
        session.execute(update(User).where(col(User.email) == "alan@example.com").values(active=False))
    left = await poll(http, started["device_code"])
    assert error_of(left) == "access_denied" and "no token was made" in left.json()["error_description"]
    a_while_since_the_last_poll(offline)
    assert error_of(await poll(http, started["device_code"])) == "invalid_grant"  # used up all the same


async def test_an_anonymous_browser_signs_in_first_and_comes_back_with_its_code(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path / "oidc")  # Lapse signs people in itself (OIDC)
    async with client(offline_app(settings)) as http:
        started = await start(http)
        link = f"/device?user_code={started['user_code']}"
        sent = await http.get(link, headers={"Accept": "text/html,application/xhtml+xml"})
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/auth/login?next=%2Fdevice%3Fuser_code%3D{started['user_code']}"
        assert (await http.get(link)).status_code == 401  # not a browser: told, not sent
        signed_in = session_caller(settings, "alan@example.com")
        shown = await signed_in.call(http, "GET", link, headers={"Accept": "text/html"})
        assert shown.status_code == 200 and started["user_code"] in shown.text
        approved = await decide(http, signed_in, started["user_code"], "approve")
        assert approved.status_code == 200 and "Approved." in approved.text
        assert (await poll(http, started["device_code"])).status_code == 200


def _user(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
    assert user is not None
    return user
