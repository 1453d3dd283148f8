"""``lapse login`` and ``lapse logout``: an API token, approved in a browser (the device flow) or pasted, checked
by the API, kept per API in the user's config directory (0600), and sent by every command; ``--as`` stays the SSO
proxy's way. The browser's side of the device flow is in ``tests/api/test_device_sign_in.py``; the whole of it,
with the real command and a real browser, in ``tests/web/test_device_sign_in.py``."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlmodel import update
from typer.testing import CliRunner, Result

import starter.cli as cli
from starter import cli_login
from starter.services import device, tokens
from store import catalog
from store.db import session_scope
from store.settings import Settings
from store.tables import ApiToken, DeviceSignIn, User
from tests.api.identities import client, mint, offline_app, offline_settings

API = "https://lapse.test"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return offline_settings(tmp_path / "server", auth="proxy", trusted_proxies=["127.0.0.1"])


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("LAPSE_TOKEN", raising=False)
    monkeypatch.delenv("LAPSE_USER", raising=False)
    return home


Lapse = Callable[..., Awaitable[Result]]


@pytest.fixture
def sent() -> list[httpx.Request]:
    """What the CLI sent (its requests, answered by the app)."""
    return []


@pytest.fixture
def answered() -> dict[str, Any]:
    """The app's last JSON answer to each path the CLI called (the sign-in's user code, say)."""
    return {}


@pytest_asyncio.fixture
async def lapse(
    settings: Settings,
    config_home: Path,
    sent: list[httpx.Request],
    answered: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Lapse]:
    loop = asyncio.get_running_loop()
    async with client(offline_app(settings)) as http:
        http.event_hooks["request"].append(_record(sent))
        http.event_hooks["response"].append(_keep(answered))

        def request(method: str, url: str, *, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
            assert url.startswith(API), url
            call = http.request(method, url.removeprefix(API), **kwargs)
            return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=timeout.read)

        monkeypatch.setattr(cli, "httpx", SimpleNamespace(request=request, HTTPError=httpx.HTTPError))

        async def run(*args: str, input: str | None = None, api: str = API) -> Result:
            return await asyncio.to_thread(CliRunner().invoke, cli.app, ["--api", api, *args], input=input)

        yield run


def _record(sent: list[httpx.Request]) -> Callable[[httpx.Request], Awaitable[None]]:
    async def hook(request: httpx.Request) -> None:
        sent.append(request)

    return hook


def _keep(answered: dict[str, Any]) -> Callable[[httpx.Response], Awaitable[None]]:
    async def hook(response: httpx.Response) -> None:
        await response.aread()
        if response.headers.get("content-type", "").endswith("json"):
            answered[response.request.url.path] = response.json()

    return hook


def _kept(config_home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((config_home / "lapse" / "credentials.json").read_text())
    return data


async def test_login_checks_the_token_keeps_it_private_and_every_command_sends_it(
    lapse: Lapse, settings: Settings, config_home: Path, sent: list[httpx.Request]
) -> None:
    token = mint(settings, "alan@example.com", "read")
    signed_in = await lapse("login", "--token", token)
    assert signed_in.exit_code == 0, signed_in.output
    assert f"signed in to {API} as alan@example.com (token scopes: read)" in signed_in.output
    assert token not in signed_in.output
    path = config_home / "lapse" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _kept(config_home)[API]["token"] == token and _kept(config_home)[API]["email"] == "alan@example.com"

    sent.clear()
    listed = await lapse("grants")
    assert listed.exit_code == 0, listed.output
    [call] = sent
    assert call.headers["authorization"] == f"Bearer {token}" and "x-forwarded-email" not in call.headers

    # Behind the proxy, --as is who the header says, and the kept token is not sent.
    sent.clear()
    assert (await lapse("--as", "ada@example.com", "grants", "--all")).exit_code == 0
    assert sent[0].headers["x-forwarded-email"] == "ada@example.com" and "authorization" not in sent[0].headers

    # Another API has its own token (none here).
    elsewhere = await lapse("grants", api=f"{API}/other")
    assert elsewhere.exit_code == 1 and "lapse login" in elsewhere.output


async def test_login_asks_for_the_token_without_echoing_it(lapse: Lapse, settings: Settings, config_home: Path) -> None:
    token = mint(settings, "linus@example.com", "read", "approve")
    signed_in = await lapse("login", "--paste", input=f"{token}\n")
    assert signed_in.exit_code == 0, signed_in.output
    assert "as linus@example.com (token scopes: read, approve)" in signed_in.output and token not in signed_in.output
    assert _kept(config_home)[API]["email"] == "linus@example.com"


async def test_login_reads_the_token_from_standard_input_given_a_dash(
    lapse: Lapse, settings: Settings, config_home: Path
) -> None:
    token = mint(settings, "alan@example.com", "read")
    signed_in = await lapse("login", "--token", "-", input=f"{token}\n")
    assert signed_in.exit_code == 0, signed_in.output
    assert "as alan@example.com" in signed_in.output and token not in signed_in.output
    assert _kept(config_home)[API]["token"] == token
    empty = await lapse("login", "--token", "-", input="")
    assert empty.exit_code == 1 and "no API token given" in empty.output


async def test_no_token_goes_over_plain_http_to_another_machine(
    lapse: Lapse, settings: Settings, config_home: Path, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = mint(settings, "alan@example.com", "read")
    for plain in ("http://lapse.example.com", "http://10.0.0.5:8000"):
        refused = await lapse("login", "--token", token, api=plain)
        assert refused.exit_code == 1 and "refusing to send an API token" in refused.output, refused.output
        assert "https://" in refused.output and token not in refused.output
        monkeypatch.setenv("LAPSE_TOKEN", token)
        from_env = await lapse("grants", api=plain)
        assert from_env.exit_code == 1 and "over plain http" in from_env.output
        monkeypatch.delenv("LAPSE_TOKEN")
    assert sent == [] and not (config_home / "lapse" / "credentials.json").exists()
    for url, elsewhere in (
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("http://[::1]:8000", False),
        ("https://lapse.example.com", False),
        ("http://lapse.example.com", True),
        ("http://localhost.example.com", True),
        ("http://10.0.0.5:8000", True),
    ):
        assert cli_login.plain_http_elsewhere(url) is elsewhere, url


async def test_every_change_is_sent_as_json(lapse: Lapse, sent: list[httpx.Request]) -> None:
    """Behind the SSO proxy, a change with a form's (or no) content type needs the page's CSRF token, which the CLI
    has not: it declares JSON, which no page on another site can send without a preflight."""
    shown = await lapse("--as", "alan@example.com", "credentials", "nosuchrequest")
    assert "CSRF" not in shown.output and "(404)" in shown.output, shown.output
    assert sent[-1].method == "POST" and sent[-1].headers["content-type"] == "application/json"


async def test_a_token_the_api_refuses_is_not_kept(lapse: Lapse, config_home: Path) -> None:
    refused = await lapse("login", "--token", "lapse_" + "x" * 43)
    assert refused.exit_code == 1 and "the API token is not valid" in refused.output
    assert not (config_home / "lapse" / "credentials.json").exists()


async def test_a_kept_token_that_stopped_working_says_to_sign_in_again(
    lapse: Lapse, settings: Settings, config_home: Path
) -> None:
    token = mint(settings, "alan@example.com", "read")
    assert (await lapse("login", "--token", token)).exit_code == 0
    assert (await lapse("--as", "alan@example.com", "logout")).exit_code == 0  # forgotten, still valid
    assert (await lapse("login", "--token", token)).exit_code == 0
    me = _kept(config_home)[API]["token_id"]
    with session_scope(settings.db_url, write=False) as session:
        alan = catalog.find_user(session, "alan@example.com")
    assert alan is not None
    tokens.revoke_token(settings, alan, me)
    stale = await lapse("grants")
    assert stale.exit_code == 1 and "no longer works" in stale.output and "lapse login" in stale.output


async def test_logout_forgets_and_can_revoke(lapse: Lapse, settings: Settings, config_home: Path) -> None:
    nothing = await lapse("logout")
    assert nothing.exit_code == 0 and "nothing to forget" in nothing.output

    kept = mint(settings, "alan@example.com", "read")
    assert (await lapse("login", "--token", kept)).exit_code == 0
    forgot = await lapse("logout")
    assert forgot.exit_code == 0 and f"forgot the token for {API}" in forgot.output
    assert API not in _kept(config_home)
    assert (await lapse("login", "--token", kept)).exit_code == 0  # forgetting leaves it valid

    revoked = await lapse("logout", "--revoke")
    assert revoked.exit_code == 0 and "revoked and forgot" in revoked.output
    assert (await lapse("login", "--token", kept)).exit_code == 1  # dead at the API too

    dead = mint(settings, "alan@example.com", "read")
    assert (await lapse("login", "--token", dead)).exit_code == 0
    assert (await lapse("logout", "--revoke")).exit_code == 0
    again = mint(settings, "alan@example.com", "read")
    assert (await lapse("login", "--token", again)).exit_code == 0
    with session_scope(settings.db_url) as session:
        session.execute(update(ApiToken).values(revoked_at=datetime.now(UTC)))
    gone = await lapse("logout", "--revoke")  # it no longer works: forgotten all the same
    assert gone.exit_code == 0 and "no longer worked" in gone.output and API not in _kept(config_home)


async def test_lapse_token_from_the_environment(
    lapse: Lapse, settings: Settings, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = mint(settings, "ada@example.com", "read")
    monkeypatch.setenv("LAPSE_TOKEN", token)
    assert (await lapse("catalog")).exit_code == 0
    assert sent[-1].headers["authorization"] == f"Bearer {token}"


async def test_without_a_token_or_as_a_command_says_how_to_sign_in(lapse: Lapse) -> None:
    failed = await lapse("grants")
    assert failed.exit_code == 1
    assert "say who you are: lapse --as you@example.com" in failed.output and "lapse login" in failed.output


# --- signing in through a browser: the CLI's side, the browser's done through the service ------------------

Pause = Callable[[float], object]


def _person(settings: Settings, email: str) -> User:
    with session_scope(settings.db_url, write=False) as session:
        user = catalog.find_user(session, email)
    assert user is not None
    return user


def _waiting(settings: Settings, **values: object) -> None:
    """Change the one sign-in under way (its expiry, its last poll)."""
    with session_scope(settings.db_url) as session:
        session.execute(update(DeviceSignIn).values(**values))


def _pauses(monkeypatch: pytest.MonkeyPatch, *steps: Pause | None) -> list[float]:
    """The CLI's waits between polls, recorded; the n-th does ``steps[n]`` (a person approving, say) instead of
    waiting."""
    waited: list[float] = []

    def pause(seconds: float) -> None:
        step = steps[len(waited)] if len(waited) < len(steps) else None
        waited.append(seconds)
        if step is not None:
            step(seconds)

    monkeypatch.setattr(cli_login, "_pause", pause)
    return waited


def _code(answered: dict[str, Any]) -> str:
    return str(answered["/auth/device"]["user_code"])


async def test_login_through_a_browser_keeps_the_token_its_person_approved(
    lapse: Lapse, settings: Settings, config_home: Path, answered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alan = _person(settings, "alan@example.com")
    waited = _pauses(monkeypatch, lambda _: device.decide(settings, alan, _code(answered), approve=True))
    signed_in = await lapse("login")
    assert signed_in.exit_code == 0, signed_in.output
    code = _code(answered)
    where = answered["/auth/device"]["verification_uri"]  # where the API is served (no LAPSE_PUBLIC_URL here)
    assert where.endswith("/device") and f"open {where} in a browser" in signed_in.output
    assert f"and type the code\n\n    {code}\n" in signed_in.output
    assert "?user_code=" not in signed_in.output  # a link approves nothing by itself: the person types the code
    assert f"signed in to {API} as alan@example.com (token scopes: read, request, approve)" in signed_in.output
    assert waited == [device.INTERVAL]
    kept = _kept(config_home)[API]
    assert kept["token"].startswith("lapse_") and kept["token"] not in signed_in.output
    path = config_home / "lapse" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [made] = tokens.list_tokens(settings, alan)
    assert made.name == f"lapse CLI on {cli_login.client_name()}" and made.id == kept["token_id"]
    assert (await lapse("grants")).exit_code == 0


async def test_login_waits_longer_when_told_to_slow_down(
    lapse: Lapse, settings: Settings, config_home: Path, answered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alan = _person(settings, "alan@example.com")

    def approve_a_while_later(_: float) -> None:
        _waiting(settings, polled_at=datetime.now(UTC) - timedelta(minutes=1))
        device.decide(settings, alan, _code(answered), approve=True)

    # The first two waits are skipped: the second poll comes too soon, and the CLI waits 5 seconds more from then on.
    waited = _pauses(monkeypatch, lambda _: None, lambda _: None, approve_a_while_later)
    signed_in = await lapse("login")
    assert signed_in.exit_code == 0, signed_in.output
    assert waited == [device.INTERVAL, device.INTERVAL, device.INTERVAL + device.SLOW_DOWN]
    assert _kept(config_home)[API]["email"] == "alan@example.com"


async def test_login_ends_clearly_when_denied_expired_or_stopped(
    lapse: Lapse, settings: Settings, config_home: Path, answered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alan = _person(settings, "alan@example.com")
    _pauses(monkeypatch, lambda _: device.decide(settings, alan, _code(answered), approve=False))
    denied = await lapse("login")
    assert denied.exit_code == 1 and "not approved: alan@example.com denied this sign-in" in denied.output

    _pauses(monkeypatch, lambda _: _waiting(settings, expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = await lapse("login")
    assert expired.exit_code == 1 and f"the code {_code(answered)} expired before it was approved" in expired.output

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    _pauses(monkeypatch, interrupt)
    stopped = await lapse("login")
    assert stopped.exit_code == cli_login.INTERRUPTED and "stopped: not signed in, nothing kept" in stopped.output
    assert not (config_home / "lapse" / "credentials.json").exists()


async def test_login_without_a_browser_sign_in_at_the_api_asks_for_a_token(
    lapse: Lapse, config_home: Path, sent: list[httpx.Request]
) -> None:
    older = await lapse("login", api=f"{API}/older")  # nothing answers /older/auth/device: as a Lapse from before it
    assert older.exit_code == 1 and "offers no sign-in through a browser" in older.output
    assert "lapse login --token -" in older.output  # no terminal to paste into here
    plain = await lapse("login", api="http://lapse.example.com")
    assert plain.exit_code == 1 and "refusing to send an API token" in plain.output
    assert [request.url.path for request in sent] == ["/older/auth/device"]
