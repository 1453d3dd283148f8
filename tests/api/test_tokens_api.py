"""API tokens (``/api/tokens``) and service accounts (``/api/service-accounts``): shown once, kept as a hash,
limited by their scopes, and never more than their owner."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlmodel import SQLModel, col, select, update

from access.errors import Refusal
from starter.services import sessions
from starter.services.tokens import MAX_LIVE_TOKENS
from store.db import engine_for, session_scope
from store.settings import Settings
from store.tables import ApiToken, AuditEvent, User
from tests.api.answers import problem
from tests.api.identities import client, mint, offline_app, offline_settings, proxy_caller, token_caller
from tests.conftest import Api

ADA = proxy_caller("ada@example.com")  # an admin
ALAN = proxy_caller("alan@example.com")  # a requester


@pytest.fixture
def offline(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation behind the SSO proxy (people create their tokens through it), no Temporal."""
    return offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])


@pytest_asyncio.fixture
async def http(offline: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(offline)) as http:
        yield http


def _set(settings: Settings, token_id: str, **values: object) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(update(ApiToken).where(col(ApiToken.id) == token_id).values(**values))


def _set_user(settings: Settings, email: str, **values: object) -> None:
    with session_scope(settings.db_url) as session:
        session.execute(update(User).where(col(User.email) == email).values(**values))


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


async def test_a_token_is_shown_once_and_kept_only_as_its_hash(
    offline: Settings, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # every statement, with its parameters
    try:
        made = await ALAN.call(http, "POST", "/api/tokens", json={"name": "ci deploy", "scopes": ["read"]})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert token.startswith("lapse_") and len(token) > 40
        assert made.json()["scopes"] == ["read"] and made.json()["state"] == "active"
        expires = datetime.fromisoformat(made.json()["expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)  # the default

        me = await token_caller(token).call(http, "GET", "/api/me")
        assert me.status_code == 200, me.text
        assert me.json() | {"token_id": None} == {
            "email": "alan@example.com",
            "name": "Alan Turing",
            "admin": False,
            "service_account": False,
            "via": "token",
            "scopes": ["read"],
            "token_id": None,
            "session_expires_at": None,
        }

        listed = await ALAN.call(http, "GET", "/api/tokens")
        assert listed.status_code == 200
        [entry] = listed.json()
        assert "token" not in entry and token not in listed.text
        assert entry["id"] == made.json()["id"] == me.json()["token_id"] and entry["name"] == "ci deploy"
        assert entry["last_used_at"] is not None  # the call above
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)

    stored = _everything_stored(offline)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored and token.removeprefix("lapse_") not in stored
    assert digest in stored  # what is kept instead
    assert digest in caplog.text and token.removeprefix("lapse_") not in caplog.text  # the log saw the SQL, not it
    with session_scope(offline.db_url, write=False) as session:
        actions = list(session.exec(select(AuditEvent.action)))
    assert "token.created" in actions


async def test_a_token_does_what_its_scopes_say_and_nothing_more(offline: Settings, http: httpx.AsyncClient) -> None:
    read = token_caller(mint(offline, "alan@example.com", "read"))
    assert (await read.call(http, "GET", "/api/catalog")).status_code == 200
    assert (await read.call(http, "GET", "/")).status_code == 200  # a page is a GET too
    refused = await read.call(http, "POST", "/api/requests/abc/approve", json={"comment": "ok"})
    detail = problem(refused, 403)
    assert "(read)" in detail and "approve" in detail
    problem(await read.call(http, "POST", "/api/requests", json={}), 403)

    request = token_caller(mint(offline, "alan@example.com", "request"))
    problem(await request.call(http, "GET", "/api/catalog"), 403)
    # Past the scope check: the body is what is wrong now.
    problem(await request.call(http, "POST", "/api/requests", json={}), 422)
    problem(await request.call(http, "POST", "/api/requests/abc/approve", json={"comment": "ok"}), 403)

    approve = token_caller(mint(offline, "linus@example.com", "approve"))
    decided = await approve.call(http, "POST", "/api/requests/abc/approve", json={"comment": "ok"})
    assert decided.status_code not in (401, 403), decided.text  # on to the request (no Temporal here: 503)

    # An admin's token without the admin scope acts as a non-admin, on admin routes and everywhere else.
    ada_read = token_caller(mint(offline, "ada@example.com", "read"))
    assert "admin" in problem(await ada_read.call(http, "GET", "/api/integrations"), 403)
    assert (await ADA.call(http, "GET", "/api/grants", params={"all": "true"})).status_code == 200
    problem(await ada_read.call(http, "GET", "/api/grants", params={"all": "true"}), 403)
    me = await ada_read.call(http, "GET", "/api/me")
    assert me.json()["admin"] is False
    ada_admin = token_caller(mint(offline, "ada@example.com", "read", "admin"))
    assert (await ada_admin.call(http, "GET", "/api/integrations")).status_code == 200
    assert (await ada_admin.call(http, "GET", "/api/grants", params={"all": "true"})).status_code == 200


async def test_a_token_never_does_more_than_its_owner(offline: Settings, http: httpx.AsyncClient) -> None:
    minted = await ALAN.call(http, "POST", "/api/tokens", json={"name": "x", "scopes": ["read", "admin"]})
    assert "not an admin" in problem(minted, 403, "scopes")

    admin = token_caller(mint(offline, "ada@example.com", "admin"))
    assert (await admin.call(http, "GET", "/api/audit")).status_code == 200
    _set_user(offline, "ada@example.com", is_admin=False)  # no longer an admin: nor is her token
    assert problem(await admin.call(http, "GET", "/api/audit"), 403) == "only admins can do this"

    alan = token_caller(mint(offline, "alan@example.com", "read"))
    assert (await alan.call(http, "GET", "/api/catalog")).status_code == 200
    _set_user(offline, "alan@example.com", active=False)  # a leaver: his tokens stop with him
    assert "not valid" in problem(await alan.call(http, "GET", "/api/catalog"), 401, "Authorization")
    _set_user(offline, "alan@example.com", active=True)  # back again: his old tokens are not (revoked for good)
    problem(await alan.call(http, "GET", "/api/catalog"), 401, "Authorization")


async def test_expired_and_revoked_tokens_are_refused(offline: Settings, http: httpx.AsyncClient) -> None:
    expiring = await ALAN.call(http, "POST", "/api/tokens", json={"name": "short", "scopes": ["read"]})
    caller = token_caller(expiring.json()["token"])
    assert (await caller.call(http, "GET", "/api/catalog")).status_code == 200
    _set(offline, expiring.json()["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    problem(await caller.call(http, "GET", "/api/catalog"), 401, "Authorization")
    [listed] = (await ALAN.call(http, "GET", "/api/tokens")).json()
    assert listed["state"] == "expired"

    made = await ALAN.call(http, "POST", "/api/tokens", json={"name": "revoked", "scopes": ["read"]})
    caller = token_caller(made.json()["token"])
    assert (await caller.call(http, "GET", "/api/catalog")).status_code == 200
    revoked = await ALAN.call(http, "DELETE", f"/api/tokens/{made.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    problem(await caller.call(http, "GET", "/api/catalog"), 401, "Authorization")
    # Someone else's token is not there for him; an admin may revoke anyone's.
    adas = await ADA.call(http, "POST", "/api/tokens", json={"name": "ada's", "scopes": ["read"]})
    problem(await ALAN.call(http, "DELETE", f"/api/tokens/{adas.json()['id']}"), 404, "token_id")
    alans = await ALAN.call(http, "POST", "/api/tokens", json={"name": "lost laptop", "scopes": ["read"]})
    assert (await ADA.call(http, "DELETE", f"/api/tokens/{alans.json()['id']}")).json()["state"] == "revoked"
    problem(await token_caller(alans.json()["token"]).call(http, "GET", "/api/catalog"), 401)


async def test_lifetimes_are_bounded(offline: Settings, http: httpx.AsyncClient) -> None:
    too_long = await ALAN.call(http, "POST", "/api/tokens", json={"name": "x", "scopes": ["read"], "expires_in": "P2Y"})
    assert "365 days" in problem(too_long, 422, "expires_in")
    hour = await ALAN.call(http, "POST", "/api/tokens", json={"name": "x", "scopes": ["read"], "expires_in": "PT1H"})
    assert hour.status_code == 201
    expires = datetime.fromisoformat(hour.json()["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    for body, field in (
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["everything"]}, "scopes.0"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "a\x1bb", "scopes": ["read"]}, "name"),
    ):
        problem(await ALAN.call(http, "POST", "/api/tokens", json=body), 422, field)


async def test_one_owner_holds_a_bounded_number_of_tokens(offline: Settings, http: httpx.AsyncClient) -> None:
    for n in range(MAX_LIVE_TOKENS):
        mint(offline, "alan@example.com", "read", name=f"t{n}")
    full = await ALAN.call(http, "POST", "/api/tokens", json={"name": "one more", "scopes": ["read"]})
    assert "revoke one first" in problem(full, 409)


async def test_a_token_makes_no_tokens_and_revokes_only_itself(offline: Settings, http: httpx.AsyncClient) -> None:
    mine = await ALAN.call(http, "POST", "/api/tokens", json={"name": "other", "scopes": ["read"]})
    caller = token_caller(mint(offline, "alan@example.com", "read", "request", "approve"))
    made = await caller.call(http, "POST", "/api/tokens", json={"name": "copy", "scopes": ["read"]})
    assert "sign in" in problem(made, 403)
    problem(await caller.call(http, "DELETE", f"/api/tokens/{mine.json()['id']}"), 403)
    me = (await caller.call(http, "GET", "/api/me")).json()
    assert (await caller.call(http, "DELETE", f"/api/tokens/{me['token_id']}")).status_code == 200
    problem(await caller.call(http, "GET", "/api/me"), 401)
    assert (await token_caller(mine.json()["token"]).call(http, "GET", "/api/me")).status_code == 200


async def test_a_bad_bearer_is_refused_not_passed_over(http: httpx.AsyncClient) -> None:
    for authorization in ("Bearer lapse_" + "x" * 43, "Bearer nonsense", "Basic YWRhOmFkYQ==", "Bearer "):
        response = await http.get(
            "/api/catalog", headers={"Authorization": authorization, "X-Forwarded-Email": "ada@example.com"}
        )
        problem(response, 401, "Authorization")


async def test_last_use_is_written_at_most_once_a_minute(offline: Settings, http: httpx.AsyncClient) -> None:
    made = await ALAN.call(http, "POST", "/api/tokens", json={"name": "x", "scopes": ["read"]})
    caller = token_caller(made.json()["token"])

    async def last_used() -> str:
        [entry] = (await ALAN.call(http, "GET", "/api/tokens")).json()
        return str(entry["last_used_at"])

    await caller.call(http, "GET", "/api/catalog")
    first = await last_used()
    await caller.call(http, "GET", "/api/catalog")
    assert await last_used() == first
    _set(offline, made.json()["id"], last_used_at=datetime.now(UTC) - timedelta(minutes=2))
    await caller.call(http, "GET", "/api/catalog")
    later = await last_used()
    assert datetime.fromisoformat(later) > datetime.fromisoformat(first) - timedelta(seconds=1)
    assert datetime.now(UTC) - datetime.fromisoformat(later) < timedelta(seconds=30)


async def test_service_accounts_hold_tokens_and_never_sign_in(offline: Settings, http: httpx.AsyncClient) -> None:
    body = {"email": "CI@example.com", "name": "Deploy pipeline"}
    problem(await ALAN.call(http, "POST", "/api/service-accounts", json=body), 403)
    created = await ADA.call(http, "POST", "/api/service-accounts", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "email": "ci@example.com",
        "name": "Deploy pipeline",
        "admin": False,
        "active": True,
        "tokens": [],
    }
    problem(await ADA.call(http, "POST", "/api/service-accounts", json=body), 409, "email")
    problem(await ADA.call(http, "POST", "/api/service-accounts", json={"email": "alan@example.com"}), 409, "email")
    problem(await ADA.call(http, "POST", "/api/service-accounts", json={"email": "no-at-sign"}), 422, "email")

    tokens = "/api/service-accounts/ci@example.com/tokens"
    refused = await ADA.call(http, "POST", tokens, json={"name": "x", "scopes": ["admin"]})
    assert "not an admin" in problem(refused, 403, "scopes")
    problem(await ALAN.call(http, "POST", tokens, json={"name": "x", "scopes": ["read"]}), 403)
    problem(
        await ADA.call(
            http, "POST", "/api/service-accounts/alan@example.com/tokens", json={"name": "x", "scopes": ["read"]}
        ),
        404,
    )
    admin_token = token_caller(mint(offline, "ada@example.com", "admin"))
    problem(await admin_token.call(http, "POST", tokens, json={"name": "x", "scopes": ["read"]}), 403)

    made = await ADA.call(http, "POST", tokens, json={"name": "deploy", "scopes": ["read", "request"]})
    assert (
        made.status_code == 201
        and made.json()["owner"] == "ci@example.com"
        and made.json()["created_by"] == "ada@example.com"
    )
    ci = token_caller(made.json()["token"])
    me = (await ci.call(http, "GET", "/api/me")).json()
    assert me["email"] == "ci@example.com" and me["service_account"] is True and me["scopes"] == ["read", "request"]
    assert (await ci.call(http, "GET", "/api/catalog")).status_code == 200

    # It cannot sign in: not through the proxy's header, not through a browser session.
    assert "service account" in problem(await proxy_caller("ci@example.com").call(http, "GET", "/api/catalog"), 401)
    with pytest.raises(Refusal, match="service account"):
        sessions.start_session(offline, "ci@example.com", auth_time=datetime.now(UTC))

    [listed] = (await ADA.call(http, "GET", "/api/service-accounts")).json()
    assert listed["email"] == "ci@example.com" and [t["name"] for t in listed["tokens"]] == ["deploy"]
    assert made.json()["token"] not in (await ADA.call(http, "GET", "/api/service-accounts")).text

    gone = await ADA.call(http, "DELETE", "/api/service-accounts/ci@example.com")
    assert gone.json()["active"] is False and gone.json()["tokens"][0]["state"] == "revoked"
    problem(await ci.call(http, "GET", "/api/catalog"), 401, "Authorization")
    problem(await ADA.call(http, "DELETE", "/api/service-accounts/alan@example.com"), 404)


async def test_an_approve_token_is_no_approval_right(api: Api, settings: Settings) -> None:
    status = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1H")  # linus, his manager
    request_id = status["id"]

    async def decide(email: str, *scopes: str) -> httpx.Response:
        caller = token_caller(mint(settings, email, *scopes))
        return await caller.call(api.http, "POST", f"/api/requests/{request_id}/approve", json={"comment": "ok"})

    problem(await decide("barbara@example.com", "approve"), 403)  # not eligible: a token does not make her so
    problem(await decide("alan@example.com", "approve"), 403)  # his own request
    problem(await decide("ada@example.com", "approve", "admin"), 403)  # an admin is no approver either
    problem(await decide("linus@example.com", "read", "request"), 403)  # eligible, but the token may not decide
    assert (await api.status(request_id))["state"] == "pending"
    approved = await decide("linus@example.com", "approve")
    assert approved.status_code == 200, approved.text
    await api.wait_for(request_id, "active")
