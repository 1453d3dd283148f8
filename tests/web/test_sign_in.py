"""OIDC sign-in through a real provider: the demo's (oidc-provider-mock, ``starter.demo_provider``), started once.

Over HTTP, a client plays the browser: Lapse's login sends it to the provider, it submits the provider's
authorization form for a chosen user, and follows the way back; the cookies, the session, where it lands and
every refusal are checked. Then the same in Chromium, through the provider's own page.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio
import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from playwright.async_api import Browser, Route
from sqlmodel import col, select

from harness.ports import free_port
from starter.api.app import create_app
from starter.demo_provider import CLIENT_ID, DemoProvider, DemoUser, demo_provider
from starter.services import oidc
from starter.services.sessions import COOKIE_NAME, session_user, start_session
from starter.web.routes.auth import ID_TOKEN_COOKIE, PENDING_COOKIE
from store.db import session_scope
from store.org import DEMO_ORG, OrgFile
from store.settings import Settings
from store.tables import SERVICE_ACCOUNT, AuditEvent, User
from tests.conftest import make_settings
from tests.web.conftest import SCREENSHOTS, check_accessibility

LAPSE = "http://lapse.test"


@pytest.fixture(scope="session")
def provider() -> Iterator[DemoProvider]:
    """The demo's identity provider, with the demo organisation's people on its form."""
    people = [DemoUser(email=u.email, name=u.name) for u in OrgFile.read(DEMO_ORG).users]
    with demo_provider(people) as running:
        yield running


def oidc_settings(tmp_path: Path, provider: DemoProvider, **overrides: Any) -> Settings:
    secret = tmp_path / "oidc-client-secret"
    secret.write_text("the-demo-provider-takes-any-secret\n")
    return make_settings(
        tmp_path,
        "127.0.0.1:1",  # no Temporal behind these pages
        auth="oidc",
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        **{"public_url": LAPSE, "oidc_client_secret_file": secret, **overrides},
    )


@pytest.fixture
def settings_for(tmp_path: Path, provider: DemoProvider) -> Any:
    return lambda **overrides: oidc_settings(tmp_path, provider, **overrides)


@pytest_asyncio.fixture
async def browser_of(settings_for: Any) -> AsyncIterator[Any]:
    """``http = await browser_of(settings)``: an HTTP client that keeps cookies like a browser, reaching Lapse
    (in process, at its ``public_url``) and the provider (over the loopback)."""
    clients: list[httpx.AsyncClient] = []

    async def make(settings: Settings) -> httpx.AsyncClient:
        app = create_app(settings)
        client = httpx.AsyncClient(mounts={settings.external_url: httpx.ASGITransport(app=app)}, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    """The cookies a response sets, by name, with their attributes."""
    found: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


async def to_provider(http: httpx.AsyncClient, url: str, **params: Any) -> str:
    """Start a sign-in at Lapse: the provider's authorization URL it sends the browser to."""
    response = await http.get(url + "/auth/login", params=params)
    assert response.status_code == 303, response.text
    location: str = response.headers["location"]
    assert location.startswith("http://127.0.0.1:"), location  # the provider
    return location


async def authorize(http: httpx.AsyncClient, authorization_url: str, sub: str) -> str:
    """Submit the provider's authorization form as ``sub`` (its button for a known user, its text box for
    anyone else); the callback URL it sends the browser back to."""
    form = await http.get(authorization_url)
    assert form.status_code == 200 and "Authorize" in form.text
    answer = await http.post(authorization_url, data={"sub": sub})
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def sign_in(http: httpx.AsyncClient, sub: str, *, url: str = LAPSE, **params: Any) -> tuple[httpx.Response, str]:
    """The whole way: Lapse → provider → its form → Lapse's callback. The callback's answer and its URL."""
    callback = await authorize(http, await to_provider(http, url, **params), sub)
    assert callback.startswith(url + "/auth/callback?"), callback
    return await http.get(callback), callback


def session_cookie(response: httpx.Response) -> str:
    cookies = set_cookies(response)
    assert COOKIE_NAME in cookies, f"no session cookie: {response.status_code} {response.text[:500]}"
    return cookies[COOKIE_NAME][COOKIE_NAME].value


def refusals(settings: Settings) -> list[AuditEvent]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent).where(col(AuditEvent.action) == "sign_in.refused").order_by(col(AuditEvent.id))
        return list(session.exec(query))


# --- signing in ---------------------------------------------------------------------------------------------


async def test_signing_in_starts_a_session_with_a_protected_cookie(settings_for: Any, browser_of: Any) -> None:
    settings = settings_for()
    http = await browser_of(settings)
    authorization_url = await to_provider(http, LAPSE, next="/access")
    asked = parse_qs(urlsplit(authorization_url).query)
    assert asked["response_type"] == ["code"] and asked["client_id"] == [CLIENT_ID]
    assert asked["redirect_uri"] == [f"{LAPSE}/auth/callback"]
    assert asked["code_challenge_method"] == ["S256"] and len(asked["code_challenge"][0]) == 43
    assert asked["state"][0] and asked["nonce"][0] and asked["state"] != asked["nonce"]
    assert set(asked["scope"][0].split()) == {"openid", "email", "profile"}

    landed = await http.get(await authorize(http, authorization_url, "alan@example.com"))
    assert landed.status_code == 303 and landed.headers["location"] == "/access"
    cookie = set_cookies(landed)[COOKIE_NAME][COOKIE_NAME]
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "lax" and cookie["path"] == "/"
    assert not cookie["secure"], "public_url is http: a Secure cookie would never come back"
    info = session_user(settings, cookie.value)
    assert info is not None and info.email == "alan@example.com"
    assert info.auth_time is not None  # the provider's auth_time
    assert abs((datetime.now(UTC) - info.auth_time).total_seconds()) < 60
    assert PENDING_COOKIE in set_cookies(landed)  # used up: deleted
    assert ID_TOKEN_COOKIE in set_cookies(landed)

    page = await http.get(LAPSE + "/access")
    assert page.status_code == 200 and "Alan Turing" in page.text


async def test_cookies_are_secure_when_lapse_is_served_over_https(settings_for: Any, browser_of: Any) -> None:
    settings = settings_for(public_url="https://lapse.test")
    http = await browser_of(settings)
    started = await http.get("https://lapse.test/auth/login")
    assert set_cookies(started)[PENDING_COOKIE][PENDING_COOKIE]["secure"] is True
    landed, _ = await sign_in(http, "grace@example.com", url="https://lapse.test")
    cookie = set_cookies(landed)[COOKIE_NAME][COOKIE_NAME]
    assert cookie["secure"] is True and cookie["httponly"] is True and cookie["samesite"].lower() == "lax"


async def test_every_sign_in_makes_a_new_session_id(settings_for: Any, browser_of: Any) -> None:
    """Session fixation: an id planted in the browser before the sign-in, or the one of an earlier sign-in,
    is never the one the sign-in gives; the earlier session ends."""
    settings = settings_for()
    http = await browser_of(settings)
    http.cookies.set(COOKIE_NAME, "planted-by-someone-else", domain="lapse.test")
    first = session_cookie((await sign_in(http, "alan@example.com"))[0])
    assert first != "planted-by-someone-else"
    second = session_cookie((await sign_in(http, "alan@example.com"))[0])
    assert second != first
    assert session_user(settings, first) is None
    assert session_user(settings, second) is not None


@pytest.mark.parametrize(
    ("asked", "lands"),
    [
        ("/access", "/access"),
        ("/requests/abc?tab=steps", "/requests/abc?tab=steps"),
        ("https://evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/\t/evil.example", "/"),
        ("/auth/logout", "/"),
        ("", "/"),
    ],
)
async def test_next_goes_only_to_lapses_own_paths(settings_for: Any, browser_of: Any, asked: str, lands: str) -> None:
    http = await browser_of(settings_for())
    landed, _ = await sign_in(http, "alan@example.com", next=asked)
    assert landed.status_code == 303
    assert landed.headers["location"] == lands


async def test_the_provider_is_asked_for_a_fresh_sign_in_with_max_age(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    authorization_url = await to_provider(http, LAPSE, next="/approvals", max_age=600)
    assert parse_qs(urlsplit(authorization_url).query)["max_age"] == ["600"]
    landed = await http.get(await authorize(http, authorization_url, "linus@example.com"))
    assert landed.status_code == 303 and landed.headers["location"] == "/approvals"


# --- who may not sign in ------------------------------------------------------------------------------------


def assert_not_a_user(response: httpx.Response, who: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "You are not a Lapse user" in response.text and who in response.text
    assert COOKIE_NAME not in set_cookies(response)


async def test_someone_the_directory_does_not_know_is_not_let_in(settings_for: Any, browser_of: Any) -> None:
    settings = settings_for()
    http = await browser_of(settings)
    landed, _ = await sign_in(http, "mallory@example.com")  # the provider knows her; Lapse does not
    assert_not_a_user(landed, "mallory@example.com")
    with session_scope(settings.db_url, write=False) as session:
        assert session.exec(select(User).where(User.email == "mallory@example.com")).first() is None
    assert [(e.actor, e.reason) for e in refusals(settings)] == [
        ("mallory@example.com", "mallory@example.com is not a Lapse user")
    ]


async def test_an_inactive_user_or_a_service_account_is_not_let_in(settings_for: Any, browser_of: Any) -> None:
    settings = settings_for()
    with session_scope(settings.db_url) as session:
        katherine = session.exec(select(User).where(User.email == "katherine@example.com")).one()
        katherine.active = False
        session.add(katherine)
        session.add(User(email="ci-bot@example.com", name="CI", kind=SERVICE_ACCOUNT))
    http = await browser_of(settings)
    assert_not_a_user((await sign_in(http, "katherine@example.com"))[0], "katherine@example.com")
    assert_not_a_user((await sign_in(http, "ci-bot@example.com"))[0], "ci-bot@example.com")


async def test_the_claim_is_matched_case_insensitively(
    settings_for: Any, browser_of: Any, provider: DemoProvider
) -> None:
    provider.register([DemoUser(email="Barbara@EXAMPLE.com", name="Barbara")])  # her sub is this spelling
    settings = settings_for()
    landed, _ = await sign_in(await browser_of(settings), "Barbara@EXAMPLE.com")
    info = session_user(settings, session_cookie(landed))
    assert info is not None and info.email == "barbara@example.com"


async def test_another_claim_can_name_the_user(settings_for: Any, browser_of: Any, provider: DemoProvider) -> None:
    provider.register([DemoUser(email="ken-personal@example.net", name="Ken")])
    http = await browser_of(settings_for(oidc_user_claim="name"))
    assert_not_a_user((await sign_in(http, "ken-personal@example.net"))[0], "ken")  # "Ken" is nobody's email


async def test_an_email_the_provider_has_not_verified_is_not_let_in(
    settings_for: Any, browser_of: Any, provider: DemoProvider
) -> None:
    async with httpx.AsyncClient(base_url=provider.url) as http:
        claims = {"email": "ken@example.com", "email_verified": False}
        (await http.put("/users/unverified-ken", json=claims)).raise_for_status()
    landed, _ = await sign_in(await browser_of(settings_for()), "unverified-ken")
    assert landed.status_code == 403 and "has not verified the email ken@example.com" in landed.text
    assert COOKIE_NAME not in set_cookies(landed)


async def test_an_email_the_provider_does_not_say_it_verified_is_not_let_in(
    settings_for: Any, browser_of: Any, provider: DemoProvider
) -> None:
    """nOAuth: at some providers anyone may give their account any address; without ``email_verified: true``
    the ``email`` claim names nobody, unless told to trust the provider (``oidc_trust_unverified_email``)."""
    async with httpx.AsyncClient(base_url=provider.url) as http:
        for sub, verified in (("silent-ken", None), ("stringly-ken", "true")):
            claims = {"email": "ken@example.com"} | ({} if verified is None else {"email_verified": verified})
            (await http.put(f"/users/{sub}", json=claims)).raise_for_status()
    settings = settings_for()
    for sub in ("silent-ken", "stringly-ken"):
        landed, _ = await sign_in(await browser_of(settings), sub)
        assert landed.status_code == 403, sub
        assert "does not say it has verified the email ken@example.com" in landed.text
        assert COOKIE_NAME not in set_cookies(landed)
    assert [e.actor for e in refusals(settings)][:1] == ["ken@example.com"]  # audited (the same again coalesced)
    trusting = settings_for(oidc_trust_unverified_email=True)
    landed, _ = await sign_in(await browser_of(trusting), "silent-ken")
    assert landed.status_code == 303 and session_user(trusting, session_cookie(landed)) is not None
    # Matching on another claim, email_verified is not Lapse's concern (the provider vouches for that claim).
    with_name = oidc.match_user(settings_for(oidc_user_claim="upn"), {"upn": "ken@example.com"})
    assert with_name.email == "ken@example.com"


def test_the_demo_provider_says_its_users_emails_are_verified() -> None:
    assert DemoUser(email="alan@example.com", name="Alan").claims()["email_verified"] is True


# --- a sign-in someone tampered with ------------------------------------------------------------------------


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, name: value})))


def assert_refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 401, response.text
    assert "Sign-in failed" in response.text and all(w in response.text for w in words), response.text
    assert COOKIE_NAME not in set_cookies(response)
    assert 'href="/auth/login' in response.text  # a way to start again


async def test_a_tampered_state_is_refused(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    callback = await authorize(http, await to_provider(http, LAPSE), "alan@example.com")
    assert_refused(await http.get(with_param(callback, "state", "forged")), "did not start in this browser")
    assert (await http.get(callback)).status_code == 303  # the forgery changed nothing for the real one


async def test_a_tampered_nonce_is_refused(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    authorization_url = with_param(await to_provider(http, LAPSE), "nonce", "forged-nonce")
    assert_refused(await http.get(await authorize(http, authorization_url, "alan@example.com")), "nonce")


async def test_a_callback_works_once_and_only_in_the_browser_that_started_it(
    settings_for: Any, browser_of: Any
) -> None:
    """Login CSRF: a callback URL of someone else's sign-in (the attacker's, say) signs nobody in elsewhere."""
    settings = settings_for()
    attacker, victim = await browser_of(settings), await browser_of(settings)
    callback = await authorize(attacker, await to_provider(attacker, LAPSE), "ken@example.com")
    assert_refused(await victim.get(callback), "did not start in this browser")
    first = await attacker.get(callback)
    assert first.status_code == 303
    assert_refused(await attacker.get(callback), "already used")


async def test_a_tampered_pending_cookie_is_refused(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    callback = await authorize(http, await to_provider(http, LAPSE), "alan@example.com")
    sealed = http.cookies.get(PENDING_COOKIE)
    assert sealed
    http.cookies.delete(PENDING_COOKIE)
    http.cookies.set(PENDING_COOKIE, sealed[:-6] + "AAAAAA", domain="lapse.test", path="/auth")
    assert_refused(await http.get(callback), "did not start in this browser")


async def test_a_refusal_from_the_provider_is_a_page(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    authorization_url = await to_provider(http, LAPSE, next="/access")
    denied = await http.post(authorization_url, data={"action": "deny"})
    assert denied.status_code == 302
    back = denied.headers["location"]
    assert "state=" not in back  # the demo provider drops it there: the error is still shown
    assert_refused(await http.get(back), "did not sign you in (access_denied)")
    state = parse_qs(urlsplit(authorization_url).query)["state"][0]
    with_state = await http.get(with_param(back, "state", state) + "&error_description=You+said+no")
    assert_refused(with_state, "(access_denied: You said no)")
    assert 'href="/auth/login?next=%2Faccess"' in with_state.text  # back where the sign-in was going


async def test_an_error_link_shows_no_text_of_its_makers_choosing(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    crafted = "/auth/callback?error=access_denied%3Cb%3E&error_description=Your+account+is+locked%2C+call+555-0100"
    answer = await http.get(LAPSE + crafted)
    assert_refused(answer, "(access_deniedb)")
    assert "555-0100" not in answer.text


async def test_several_tabs_can_sign_in_at_once(settings_for: Any, browser_of: Any) -> None:
    http = await browser_of(settings_for())
    first = await to_provider(http, LAPSE, next="/access")
    second = await to_provider(http, LAPSE, next="/approvals")
    back_second = await http.get(await authorize(http, second, "alan@example.com"))
    back_first = await http.get(await authorize(http, first, "alan@example.com"))
    assert [back_first.headers["location"], back_second.headers["location"]] == ["/access", "/approvals"]


async def test_without_a_configured_issuer_sign_in_says_what_to_set(tmp_path: Path, browser_of: Any) -> None:
    settings = make_settings(tmp_path, "127.0.0.1:1", auth="oidc", public_url=LAPSE)
    answer = await (await browser_of(settings)).get(LAPSE + "/auth/login")
    assert answer.status_code == 503 and "LAPSE_OIDC_ISSUER" in answer.text


async def test_in_proxy_mode_there_is_no_sign_in_route(tmp_path: Path, browser_of: Any) -> None:
    settings = make_settings(tmp_path, "127.0.0.1:1", auth="proxy", public_url=LAPSE)
    assert (await (await browser_of(settings)).get(LAPSE + "/auth/login")).status_code == 404


def id_token(key: RSAKey, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "http://idp.test", "aud": CLIENT_ID, "sub": "alan", "email": "alan@example.com"}
    claims |= {"email_verified": True, "nonce": "the-nonce", "iat": now, "exp": now + 300, **changes}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, {k: v for k, v in claims.items() if v is not None}, key)


@pytest.mark.parametrize(
    ("signer", "changes", "why"),
    [
        ("provider", {}, None),
        ("provider", {"aud": [CLIENT_ID, "another-client"], "azp": CLIENT_ID}, None),
        ("someone else", {}, "did not verify"),
        ("provider", {"iss": "http://evil.test"}, "was refused (iss)"),
        ("provider", {"aud": "another-client"}, "was refused (aud)"),
        ("provider", {"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}, "was refused (azp)"),
        ("provider", {"nonce": "replayed"}, "was refused (nonce)"),
        ("provider", {"nonce": None}, "was refused (nonce)"),
        ("provider", {"exp": int(time.time()) - 600}, "was refused (exp)"),
    ],
)
async def test_only_the_providers_id_token_for_lapse_and_this_sign_in_is_believed(
    settings_for: Any, monkeypatch: pytest.MonkeyPatch, signer: str, changes: dict[str, Any], why: str | None
) -> None:
    """The checks on the ID token itself, with tokens no honest provider would send: another signer (keys
    fetched again, in case they rotated, then refused), another issuer, audience or party, a replayed nonce,
    an expired token."""
    settings = settings_for()
    theirs = RSAKey.generate_key(2048, parameters={"kid": "provider-key", "use": "sig"})
    forger = RSAKey.generate_key(2048, parameters={"kid": "provider-key", "use": "sig"})
    provider = oidc.Provider(
        issuer="http://idp.test",
        authorization_endpoint="http://idp.test/authorize",
        token_endpoint="http://idp.test/token",
        jwks_uri="http://idp.test/jwks",
        end_session_endpoint=None,
        token_auth_methods=("client_secret_basic",),
        algorithms=("RS256",),
        keys=dict(KeySet([theirs]).as_dict(private=False)),
        fetched=time.monotonic(),
    )
    refreshed: list[bool] = []

    async def fetch_again(_settings: Settings, *, refresh: bool = False) -> oidc.Provider:
        refreshed.append(refresh)
        return provider

    monkeypatch.setattr(oidc, "provider", fetch_again)
    pending = oidc.PendingSignIn(state="s", nonce="the-nonce", verifier="v", next="/")
    token = id_token(theirs if signer == "provider" else forger, **changes)
    if why is None:
        claims = await oidc._verified_claims(settings, provider, pending, {"id_token": token})
        assert claims["email"] == "alan@example.com"
        return
    with pytest.raises(oidc.SignInFailed, match=re.escape(why)):
        await oidc._verified_claims(settings, provider, pending, {"id_token": token})
    assert refreshed == ([True] if signer != "provider" else [])


def fake_provider(monkeypatch: pytest.MonkeyPatch, id_token_for: Any) -> RSAKey:
    """A provider at ``http://idp.test`` whose code exchange answers ``id_token_for(key)``: its signing key."""
    key = RSAKey.generate_key(2048, parameters={"kid": "provider-key", "use": "sig"})
    found = oidc.Provider(
        issuer="http://idp.test",
        authorization_endpoint="http://idp.test/authorize",
        token_endpoint="http://idp.test/token",
        jwks_uri="http://idp.test/jwks",
        end_session_endpoint=None,
        token_auth_methods=("client_secret_basic",),
        algorithms=("RS256",),
        keys=dict(KeySet([key]).as_dict(private=False)),
        fetched=time.monotonic(),
    )

    async def provider(_settings: Settings, *, refresh: bool = False) -> oidc.Provider:
        return found

    async def exchange(*_args: Any) -> dict[str, Any]:
        return {"id_token": id_token_for(key)}

    monkeypatch.setattr(oidc, "provider", provider)
    monkeypatch.setattr(oidc, "_exchange", exchange)
    return key


@pytest.mark.parametrize("max_age", [0, 600])
async def test_a_fresh_sign_in_needs_the_providers_auth_time(
    settings_for: Any, monkeypatch: pytest.MonkeyPatch, max_age: int
) -> None:
    """Asked for a sign-in at most ``max_age`` seconds old (0: now), a provider that does not say when the person
    signed in has not shown that they did: refused, never taken to be "just now"."""
    settings = settings_for()
    changes: dict[str, Any] = {}
    fake_provider(monkeypatch, lambda key: id_token(key, **changes))
    pending = oidc.PendingSignIn(state="s", nonce="the-nonce", verifier="v", next="/approvals", max_age=max_age)
    with pytest.raises(oidc.SignInFailed, match="auth_time") as refused:
        await oidc.finish_sign_in(settings, pending, code="a-code")
    assert refused.value.next_path == "/approvals"
    changes["auth_time"] = int(time.time()) - 5
    signed_in = await oidc.finish_sign_in(settings, pending, code="a-code")
    assert signed_in.auth_time is not None and signed_in.user.email == "alan@example.com"
    changes["auth_time"] = int(time.time()) - max_age - oidc.LEEWAY_SECONDS - 60
    with pytest.raises(oidc.SignInFailed, match="sign in again"):
        await oidc.finish_sign_in(settings, pending, code="a-code")


async def test_without_max_age_a_missing_auth_time_is_unknown_not_now(
    settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for()
    fake_provider(monkeypatch, id_token)
    pending = oidc.PendingSignIn(state="s", nonce="the-nonce", verifier="v", next="/")
    signed_in = await oidc.finish_sign_in(settings, pending, code="a-code")
    assert signed_in.auth_time is None
    started = start_session(settings, signed_in.user.email, auth_time=signed_in.auth_time)
    info = session_user(settings, started.id)
    assert info is not None and info.auth_time is None


def test_each_pending_sign_in_expires_on_its_own_time(settings_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tab's sign-in started 11 minutes ago is refused, even if another tab's, 2 minutes ago, sealed the cookie
    holding both again since (as ``/auth/login`` does)."""
    settings = settings_for()
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])

    def started() -> oidc.PendingSignIn:
        return oidc.PendingSignIn(state=f"state-{clock[0]}", nonce="n", verifier="v", next="/")

    first = started()
    sealed = oidc.seal_pending(settings, [first])
    clock[0] += 9 * 60
    second = started()
    sealed = oidc.seal_pending(settings, [second, *oidc.open_pending(settings, sealed)])
    assert [p.state for p in oidc.open_pending(settings, sealed)] == [second.state, first.state]
    clock[0] += 2 * 60
    assert [p.state for p in oidc.open_pending(settings, sealed)] == [second.state]
    with pytest.raises(oidc.SignInFailed, match="took longer than 10 minutes"):
        oidc.take_pending(oidc.open_pending(settings, sealed), first.state)
    clock[0] += 9 * 60
    assert oidc.open_pending(settings, sealed) == []


# --- signing out --------------------------------------------------------------------------------------------


def csrf_token_of(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', page.text)
    assert found and found.group(1), page.text[:500]
    return found.group(1)


async def test_signing_out_ends_the_session_here_and_at_the_provider(settings_for: Any, browser_of: Any) -> None:
    settings = settings_for()
    http = await browser_of(settings)
    landed, _ = await sign_in(http, "alan@example.com")
    old = session_cookie(landed)
    page = await http.get(LAPSE + "/")
    assert page.status_code == 200

    forged = await http.post(LAPSE + "/auth/logout", data={"csrf_token": "guessed"}, headers={"Origin": LAPSE})
    assert forged.status_code == 403 and session_user(settings, old) is not None  # CSRF: not signed out

    out = await http.post(LAPSE + "/auth/logout", data={"csrf_token": csrf_token_of(page)}, headers={"Origin": LAPSE})
    assert out.status_code == 200 and "You are signed out of Lapse" in out.text
    assert session_user(settings, old) is None
    cleared = set_cookies(out)
    assert cleared[COOKIE_NAME][COOKIE_NAME].value == "" and cleared[ID_TOKEN_COOKIE][ID_TOKEN_COOKIE].value == ""

    # RP-initiated logout at the provider: the page sends the browser there (Refresh), with a link as well.
    delay, _, target = out.headers["refresh"].partition("; url=")
    end_session = urlsplit(target)
    asked = parse_qs(end_session.query)
    assert delay == "0" and target.startswith(settings.oidc_issuer or "") and end_session.path.endswith("end_session")
    assert f'href="{target.replace("&", "&amp;")}"' in out.text
    assert asked["post_logout_redirect_uri"] == [f"{LAPSE}/auth/signed-out"] and asked["client_id"] == [CLIENT_ID]
    assert asked["id_token_hint"][0].count(".") == 2
    confirm = await http.post(
        f"{settings.oidc_issuer}/oauth2/end_session/confirm", data={"redirect_uri": f"{LAPSE}/auth/signed-out"}
    )
    back = await http.get(confirm.headers["location"])
    assert back.status_code == 200 and "You are signed out" in back.text

    stale = await browser_of(settings)  # the old cookie, replayed from anywhere
    stale.cookies.set(COOKIE_NAME, old, domain="lapse.test")
    assert (await stale.get(LAPSE + "/")).status_code == 401


async def test_without_the_providers_logout_signing_out_ends_at_lapse(
    settings_for: Any, browser_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for()
    http = await browser_of(settings)
    session_cookie((await sign_in(http, "alan@example.com"))[0])
    found = await oidc.provider(settings)
    monkeypatch.setitem(oidc._providers, settings.oidc_issuer, replace(found, end_session_endpoint=None))
    page = await http.get(LAPSE + "/")
    out = await http.post(LAPSE + "/auth/logout", data={"csrf_token": csrf_token_of(page)}, headers={"Origin": LAPSE})
    assert out.status_code == 303 and out.headers["location"] == "/auth/signed-out"


# --- in a browser -------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def served(settings_for: Any) -> AsyncIterator[str]:
    """The app over HTTP at its ``public_url`` (the provider sends the browser back there); no Temporal is
    needed for signing in and the catalog."""
    port = free_port()
    settings = settings_for(api_port=port, public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    yield settings.external_url
    server.should_exit = True
    await serving


async def no_cdn(route: Route) -> None:
    await route.abort()  # the provider's page links Pico from a CDN: nothing leaves this machine


async def test_a_requester_signs_in_through_the_providers_page(browser: Browser, served: str) -> None:
    context = await browser.new_context(base_url=served)
    context.set_default_timeout(15_000)
    await context.route(re.compile(r"^https://"), no_cdn)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors  # type: ignore[attr-defined]
        first = await page.goto("/")
        assert first is not None and first.status == 401
        await page.get_by_role("button", name="Sign in").click()  # the 401 page's link, styled as a button
        await page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/oauth2/authorize"))
        await page.screenshot(path=SCREENSHOTS / "sign-in-provider.png", full_page=True)
        await page.get_by_role("button", name="alan@example.com").click()
        await page.wait_for_url(served + "/")
        await page.get_by_text("Signed in as").wait_for()
        assert "Alan Turing" in await page.locator(".signed-in").inner_text()
        await check_accessibility(page, "catalog signed in")

        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("button", name="End session").click()  # the provider's confirmation
        await page.wait_for_url(served + "/auth/signed-out")
        await page.get_by_role("heading", name="You are signed out").wait_for()
        await check_accessibility(page, "signed out")
        again = await page.goto("/")
        assert again is not None and again.status == 401
    finally:
        await context.close()


async def test_someone_unknown_sees_a_page_saying_so(browser: Browser, served: str) -> None:
    context = await browser.new_context(base_url=served)
    context.set_default_timeout(15_000)
    await context.route(re.compile(r"^https://"), no_cdn)
    try:
        page = await context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        await page.goto("/auth/login")
        await page.get_by_placeholder("sub").fill("mallory@example.com")
        await page.get_by_role("button", name="Authorize", exact=True).click()
        await page.get_by_role("heading", name="You are not a Lapse user").wait_for()
        assert "mallory@example.com is not a Lapse user" in await page.get_by_role("alert").inner_text()
        await check_accessibility(page, "not a lapse user")
    finally:
        await context.close()
