"""Who a call is from (``starter/api/deps.py``): a token, else the session cookie, else, behind a configured proxy
only, the proxy's header; CSRF and cross-site refusals for browsers (``starter/api/security.py``); the security
headers on every response."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from pydantic import SecretStr

from access.limits import MAX_BODY_BYTES
from starter.api.security import HEADERS, proxy_csrf_token
from starter.services import sessions
from store.settings import Settings
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

EVIL = "https://evil.example"


@pytest.fixture
def oidc(tmp_path: Path, app_db: str) -> Settings:
    """Signing in through OIDC (the default): sessions and tokens only."""
    return offline_settings(tmp_path, app_db)


@pytest_asyncio.fixture
async def http(oidc: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(oidc)) as http:
        yield http


async def _me(http: httpx.AsyncClient, caller: Caller) -> httpx.Response:
    return await caller.call(http, "GET", "/api/me")


# --- who is calling ------------------------------------------------------------------------------


async def test_the_proxy_header_means_nothing_when_signing_in_through_oidc(http: httpx.AsyncClient) -> None:
    response = await _me(http, proxy_caller("ada@example.com"))  # even from 127.0.0.1
    assert "LAPSE_AUTH=proxy" in problem(response, 401, "X-Forwarded-Email")
    page = await proxy_caller("ada@example.com").call(http, "GET", "/admin/grants")
    assert page.status_code == 401 and "text/html" in page.headers["content-type"]


async def test_the_proxy_header_is_believed_from_the_trusted_proxies_only(tmp_path: Path, app_db: str) -> None:
    settings = offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["10.0.0.0/8", "fd00::1"])
    app = offline_app(settings)
    ada = proxy_caller("ada@example.com")
    for address, believed in (("10.1.2.3", True), ("fd00::1", True), ("127.0.0.1", False), ("192.168.0.9", False)):
        async with client(app, address=address) as http:
            response = await _me(http, ada)
            if believed:
                assert response.status_code == 200 and response.json()["via"] == "proxy", response.text
            else:
                assert "LAPSE_TRUSTED_PROXIES" in problem(response, 401, "X-Forwarded-Email")
    nobody = offline_settings(tmp_path / "none", auth="proxy", trusted_proxies=[])
    async with client(offline_app(nobody)) as http:
        problem(await _me(http, ada), 401, "X-Forwarded-Email")


async def test_a_session_is_its_user_until_it_ends(oidc: Settings, http: httpx.AsyncClient) -> None:
    alan = session_caller(oidc, "alan@example.com")
    me = await _me(http, alan)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "alan@example.com" and me.json()["via"] == "session"
    assert me.json()["scopes"] is None and me.json()["session_expires_at"]
    sessions.end_session(oidc, alan.cookies[sessions.COOKIE_NAME])
    assert "session has ended" in problem(await _me(http, alan), 401)
    forged = Caller("forged", cookies={sessions.COOKIE_NAME: "made-up"})
    problem(await _me(http, forged), 401)


async def test_a_token_comes_first_then_the_session_then_the_proxy(tmp_path: Path, app_db: str) -> None:
    settings = offline_settings(tmp_path, app_db)
    ada_session = session_caller(settings, "ada@example.com")
    alan_token = mint(settings, "alan@example.com", "read")
    both = Caller("token and session", headers={"Authorization": f"Bearer {alan_token}"}, cookies=ada_session.cookies)
    async with client(offline_app(settings)) as http:
        assert (await _me(http, both)).json()["email"] == "alan@example.com"
        assert (await _me(http, ada_session)).json()["email"] == "ada@example.com"
    behind_proxy = settings.model_copy(update={"auth": "proxy", "trusted_proxies": ["127.0.0.1"]})
    all_three = Caller(
        "all three", headers={**both.headers, "X-Forwarded-Email": "grace@example.com"}, cookies=ada_session.cookies
    )
    async with client(offline_app(behind_proxy)) as http:
        assert (await _me(http, all_three)).json()["email"] == "alan@example.com"
        session_and_header = Caller(
            "two", headers={"X-Forwarded-Email": "grace@example.com"}, cookies=ada_session.cookies
        )
        assert (await _me(http, session_and_header)).json()["email"] == "grace@example.com"


async def test_behind_a_proxy_a_session_counts_for_nothing(tmp_path: Path, app_db: str) -> None:
    """Someone the SSO proxy locks out is out at once: a session made while Lapse signed people in itself (or
    planted in the browser) is not another way in once it is ``LAPSE_AUTH=proxy``."""
    settings = offline_settings(tmp_path, app_db)
    ada = session_caller(settings, "ada@example.com")
    behind_proxy = settings.model_copy(update={"auth": "proxy", "trusted_proxies": ["127.0.0.1"]})
    async with client(offline_app(behind_proxy)) as http:
        assert "X-Forwarded-Email header your SSO proxy sets is missing" in problem(await _me(http, ada), 401)
        page = await ada.call(http, "GET", "/admin/grants")
        assert page.status_code == 401 and "text/html" in page.headers["content-type"]
        changed = await ada.call(http, "POST", "/api/tokens", json={"name": "x", "scopes": ["read"]})
        problem(changed, 401)
    async with client(offline_app(settings)) as http:  # the same session, signing in through OIDC again
        assert (await _me(http, ada)).json()["email"] == "ada@example.com"


async def test_the_proxys_header_counts_only_if_sent_once(tmp_path: Path, app_db: str) -> None:
    settings = offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])
    async with client(offline_app(settings)) as http:
        one = await http.get("/api/me", headers=[("X-Forwarded-Email", "alan@example.com")])
        assert one.status_code == 200 and one.json()["email"] == "alan@example.com"
        for twice in (
            [("X-Forwarded-Email", "alan@example.com"), ("X-Forwarded-Email", "ada@example.com")],
            [("X-Forwarded-Email", "ada@example.com"), ("X-Forwarded-Email", "ada@example.com")],
        ):
            response = await http.get("/api/me", headers=twice)
            assert "exactly one" in problem(response, 401, "X-Forwarded-Email"), twice
        folded = await http.get("/api/me", headers={"X-Forwarded-Email": "alan@example.com, ada@example.com"})
        problem(folded, 401, "X-Forwarded-Email")


# --- CSRF and cross-site requests ----------------------------------------------------------------


async def test_a_sessions_changes_carry_its_csrf_token(oidc: Settings, http: httpx.AsyncClient) -> None:
    alan = session_caller(oidc, "alan@example.com")
    body = {"name": "x", "scopes": ["read"]}
    no_token = Caller("no token", cookies=alan.cookies)
    assert "CSRF" in problem(await no_token.call(http, "POST", "/api/tokens", json=body), 403, "X-CSRF-Token")
    wrong = Caller("wrong", headers={"X-CSRF-Token": "x" * 43}, cookies=alan.cookies)
    problem(await wrong.call(http, "POST", "/api/tokens", json=body), 403, "X-CSRF-Token")
    other = session_caller(oidc, "alan@example.com")  # his other browser's token is not this one's
    crossed = Caller("crossed", headers=other.headers, cookies=alan.cookies)
    problem(await crossed.call(http, "POST", "/api/tokens", json=body), 403, "X-CSRF-Token")
    problem(await no_token.call(http, "DELETE", "/api/tokens/abc"), 403, "X-CSRF-Token")
    with_token = await alan.call(http, "POST", "/api/tokens", json=body)
    assert with_token.status_code == 201, with_token.text
    assert len((await alan.call(http, "GET", "/api/tokens")).json()) == 1  # only the one with the token
    assert (await no_token.call(http, "GET", "/api/tokens")).status_code == 200  # reading needs none


async def test_a_form_sends_the_token_as_a_field(oidc: Settings, http: httpx.AsyncClient) -> None:
    alan = session_caller(oidc, "alan@example.com")
    page = await Caller("browser", cookies=alan.cookies).call(http, "GET", "/")
    assert page.status_code == 200
    token = alan.headers["X-CSRF-Token"]
    assert f'<meta name="csrf-token" content="{token}">' in page.text
    assert f'name="csrf_token" value="{token}"' in page.text  # every form carries it

    form = {"role": "ledger/prod-db/read", "duration": "PT30M", "justification": "looking"}
    browser = Caller("browser", cookies=alan.cookies)
    refused = await browser.call(http, "POST", "/requests/preview", data=form)
    assert refused.status_code == 403 and "CSRF" in refused.text and "text/html" in refused.headers["content-type"]
    accepted = await browser.call(http, "POST", "/requests/preview", data={**form, "csrf_token": token})
    assert accepted.status_code == 200, accepted.text
    multipart = await browser.call(
        http, "POST", "/requests/preview", data={**form, "csrf_token": token}, files={"unused": b""}
    )
    assert multipart.status_code != 403, multipart.text


async def test_another_site_cannot_change_anything(tmp_path: Path, app_db: str) -> None:
    settings = offline_settings(tmp_path, app_db, public_url="https://lapse.example.com")
    alan = session_caller(settings, "alan@example.com")
    body = {"name": "x", "scopes": ["read"]}
    async with client(offline_app(settings)) as http:
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            # The session's token does not help: a page elsewhere must not act with this browser's cookie.
            refused = await alan.call(http, "POST", "/api/tokens", json=body, headers=headers)
            assert "another site" in problem(refused, 403), headers
        form = {"decision": "approve", "comment": "", "csrf_token": alan.headers["X-CSRF-Token"]}
        posted = await Caller("browser", cookies=alan.cookies).call(
            http, "POST", "/approvals/abc", data=form, headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
        )
        assert posted.status_code == 403 and "another site" in posted.text
        for origin in ("https://lapse.example.com", "http://lapse.test"):  # the public URL, or the host itself
            ok = await alan.call(
                http, "POST", "/api/tokens", json=body, headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}
            )
            assert ok.status_code == 201, (origin, ok.text)
        # An API token is never sent by a browser on its own: no CSRF token needed.
        token = token_caller(mint(settings, "alan@example.com", "read"))
        assert (await token.call(http, "DELETE", "/api/tokens/0000")).status_code == 403  # its own refusal, not CSRF
        revoked = await token.call(http, "DELETE", f"/api/tokens/{(await _me(http, token)).json()['token_id']}")
        assert revoked.status_code == 200, revoked.text


async def test_behind_a_proxy_no_other_site_either(tmp_path: Path, app_db: str) -> None:
    settings = offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])
    alan = proxy_caller("alan@example.com")
    body = {"name": "x", "scopes": ["read"]}
    async with client(offline_app(settings)) as http:
        assert (await alan.call(http, "POST", "/api/tokens", json=body)).status_code == 201
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
            refused = await alan.call(http, "POST", "/api/tokens", json=body, headers=headers)
            assert "another site" in problem(refused, 403), headers
        with_token = proxy_caller("alan@example.com", settings)  # the token does not help either
        refused = await with_token.call(http, "POST", "/api/tokens", json=body, headers={"Origin": EVIL})
        assert "another site" in problem(refused, 403)
        assert len((await alan.call(http, "GET", "/api/tokens")).json()) == 1


async def test_behind_a_proxy_a_change_a_form_could_make_carries_the_users_csrf_token(
    tmp_path: Path, app_db: str
) -> None:
    """A form (or a no-cors fetch) on another site, sent by a browser that names neither its ``Origin`` nor
    ``Sec-Fetch-Site`` (an old one, a privacy extension), reaches Lapse with the proxy's header like any
    other: it must carry the user's CSRF token, which the pages have and no other site can compute."""
    settings = offline_settings(tmp_path, app_db, auth="proxy", trusted_proxies=["127.0.0.1"])
    alan, ada = proxy_caller("alan@example.com"), proxy_caller("ada@example.com")
    token = proxy_csrf_token(settings, "alan@example.com")
    assert len(token) >= 43 and token == proxy_csrf_token(settings, " Alan@Example.com ")
    assert token != proxy_csrf_token(settings, "ada@example.com")
    other_key = settings.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})
    assert token != proxy_csrf_token(other_key, "alan@example.com")  # keyed by Lapse's secret key

    async with client(offline_app(settings)) as http:
        page = await alan.call(http, "GET", "/")
        assert page.status_code == 200
        assert f'<meta name="csrf-token" content="{token}">' in page.text
        assert f'name="csrf_token" value="{token}"' in page.text  # every form carries it

        form = {"role": "ledger/prod-db/read", "duration": "PT30M", "justification": "looking"}
        for sent in ({}, {"csrf_token": "x" * 43}, {"csrf_token": proxy_csrf_token(settings, "ada@example.com")}):
            refused = await alan.call(http, "POST", "/requests/preview", data={**form, **sent})
            assert refused.status_code == 403 and "CSRF" in refused.text, sent
        accepted = await alan.call(http, "POST", "/requests/preview", data={**form, "csrf_token": token})
        assert accepted.status_code == 200, accepted.text
        in_header = await alan.call(http, "POST", "/requests/preview", data=form, headers={"X-CSRF-Token": token})
        assert in_header.status_code == 200, in_header.text

        # What a form or a no-cors fetch can send: no body, text/plain, a form's type; a token is needed.
        no_body = await ada.call(http, "POST", "/api/directory/sync")
        assert "CSRF" in problem(no_body, 403, "X-CSRF-Token")
        ada_token = {"X-CSRF-Token": proxy_csrf_token(settings, "ada@example.com")}
        assert (await ada.call(http, "POST", "/api/directory/sync", headers=ada_token)).status_code == 503
        body = b'{"name": "x", "scopes": ["read"]}'
        for kind in ("text/plain", "text/plain; charset=utf-8", " TEXT/PLAIN ", "application/x-www-form-urlencoded"):
            sent_as = await alan.call(http, "POST", "/api/tokens", content=body, headers={"Content-Type": kind})
            problem(sent_as, 403, "X-CSRF-Token")
        # What only a preflight lets a page elsewhere send (and Lapse grants none): JSON, other methods.
        as_json = await alan.call(
            http, "POST", "/api/tokens", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert as_json.status_code == 201, as_json.text
        revoked = await alan.call(http, "DELETE", f"/api/tokens/{as_json.json()['id']}")
        assert revoked.status_code == 200, revoked.text
        # From an address that is not a trusted proxy, the header names nobody: a 401, whatever it carries.
        async with client(offline_app(settings), address="10.9.9.9") as outside:
            problem(await alan.call(outside, "POST", "/api/directory/sync"), 401)


async def test_strict_transport_security_when_lapse_is_served_over_https(tmp_path: Path, app_db: str) -> None:
    https = offline_settings(tmp_path, app_db, public_url="https://lapse.example.com")
    async with client(offline_app(https)) as http:
        for path in ("/healthz", "/api/catalog", "/", "/static/lapse.css", "/docs"):
            assert (await http.get(path)).headers.get("Strict-Transport-Security") == "max-age=31536000", path
    plain = https.model_copy(update={"public_url": None})
    async with client(offline_app(plain)) as http:
        assert "Strict-Transport-Security" not in (await http.get("/healthz")).headers  # a browser ignores it anyway


async def test_the_temporal_web_ui_may_decode_with_a_session(oidc: Settings, http: httpx.AsyncClient) -> None:
    ada = session_caller(oidc, "ada@example.com")
    browser = Caller("temporal ui", cookies=ada.cookies)
    decoded = await browser.call(
        http, "POST", "/codec/decode", json={"payloads": []}, headers={"Origin": "http://localhost:8233"}
    )
    assert decoded.status_code == 200, decoded.text
    elsewhere = await browser.call(http, "POST", "/codec/decode", json={"payloads": []}, headers={"Origin": EVIL})
    problem(elsewhere, 403)


# --- headers on every response -------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(oidc: Settings, http: httpx.AsyncClient) -> None:
    alan = session_caller(oidc, "alan@example.com")
    responses = {
        "json": await alan.call(http, "GET", "/api/catalog"),
        "page": await alan.call(http, "GET", "/access"),
        "401 page": await http.get("/approvals"),
        "401 problem": await http.get("/api/catalog"),
        "static": await http.get("/static/lapse.css"),
        "404": await http.get("/nothing-here"),
        "csrf 403": await Caller("x", cookies=alan.cookies).call(http, "POST", "/api/tokens", json={}),
        "413": await http.post("/api/requests", content=b"x" * (MAX_BODY_BYTES + 1)),
        "health": await http.get("/healthz"),
    }
    assert responses["static"].status_code == 200 and responses["413"].status_code == 413
    for what, response in responses.items():
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (what, name, response.headers)
    csp = HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp and not re.search(r"unsafe-(inline|eval)", csp)


async def test_even_a_server_error_carries_the_security_headers(oidc: Settings) -> None:
    app = offline_app(oidc)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test") as http:
        response = await http.get("/boom")
    assert response.status_code == 500 and "a bug" not in response.text
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, name


async def test_the_api_docs_alone_may_load_their_cdn(http: httpx.AsyncClient) -> None:
    docs = await http.get("/docs")
    csp = docs.headers["Content-Security-Policy"]
    assert docs.status_code == 200 and "https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
    assert docs.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/openapi.json", "/docs/other", "/"):
        assert (await http.get(path)).headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
