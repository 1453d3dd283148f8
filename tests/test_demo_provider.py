"""``lapse run``'s demo identity provider: started only when sign-in is OIDC with no issuer, for the bundled demo
organisation served on this machine only (else `lapse run` refuses to start), on 127.0.0.1 only, with the app
DB's people on its form, the API pointed at it, and the banner saying how to sign in."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from starter import stack
from starter.demo_provider import CLIENT_ID, CLIENT_SECRET_ENV
from store.db import session_scope
from store.org import DEMO_ORG
from store.settings import Settings
from store.tables import SERVICE_ACCOUNT, User
from tests.conftest import make_settings


@pytest.fixture
def demo(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, "127.0.0.1:1", auth="oidc")
    with session_scope(settings.db_url) as session:
        session.add(User(email="ci-bot@example.com", name="CI", kind=SERVICE_ACCOUNT))
    return settings


def test_lapse_run_starts_a_loopback_provider_with_the_demo_people(demo: Settings) -> None:
    env = {"LAPSE_OIDC_CLIENT_SECRET_FILE": "/somewhere/else"}
    with contextlib.ExitStack() as cleanup:
        issuer = stack.demo_sign_in(demo, env, cleanup)
        assert issuer is not None and issuer.startswith("http://127.0.0.1:")
        assert env["LAPSE_OIDC_ISSUER"] == issuer and env["LAPSE_OIDC_CLIENT_ID"] == CLIENT_ID
        assert env["LAPSE_OIDC_CLIENT_SECRET_ENV"] == CLIENT_SECRET_ENV and env[CLIENT_SECRET_ENV]
        assert "LAPSE_OIDC_CLIENT_SECRET_FILE" not in env
        # What the API will read from that environment is a valid configuration.
        read: dict[str, Any] = {
            k.removeprefix("LAPSE_").lower(): v for k, v in env.items() if k.startswith("LAPSE_OIDC")
        }
        Settings(**read)

        discovery = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == issuer and discovery["end_session_endpoint"].startswith(issuer)
        form = httpx.get(
            discovery["authorization_endpoint"],
            params={
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": "http://127.0.0.1:9/cb",
                "scope": "openid",
                "nonce": "n",
                "state": "s",
            },
        ).text
        assert 'value="alan@example.com"' in form and 'value="ada@example.com"' in form
        assert "ci-bot@example.com" not in form  # a service account never signs in

        banner = stack.sign_in_banner(demo, issuer)
        assert "  Open             http://127.0.0.1:8000/" in banner
        assert "pick any demo user on the demo identity provider's form" in banner and issuer in banner
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2)  # stopped with `lapse run`


def test_the_provider_listens_on_the_loopback_only(demo: Settings) -> None:
    with contextlib.ExitStack() as cleanup:
        issuer = stack.demo_sign_in(demo, {}, cleanup)
        assert issuer is not None
        port = int(issuer.rsplit(":", 1)[1])
        addresses = {a for a in _listening(port)}
        assert addresses == {"127.0.0.1"}, addresses


def _listening(port: int) -> set[str]:
    """The local addresses TCP sockets listen on at ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                if len(address) == 8:
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(address)
    return found


ELSEWHERE = [{"auth": "proxy"}, {"auth": "oidc", "oidc_issuer": "https://id.example", "oidc_client_id": "x"}]


@pytest.mark.parametrize("overrides", ELSEWHERE)
def test_no_demo_provider_when_sign_in_goes_elsewhere(tmp_path: Path, overrides: dict[str, str]) -> None:
    settings = make_settings(tmp_path, "127.0.0.1:1", **overrides)
    env: dict[str, str] = {}
    with contextlib.ExitStack() as cleanup:
        assert stack.demo_sign_in(settings, env, cleanup) is None
    assert env == {}
    banner = stack.sign_in_banner(settings, None)
    expected = "through your SSO proxy" if overrides["auth"] == "proxy" else "through https://id.example"
    assert expected in banner


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"org_file": "ORG"}, "not the bundled demo"),
        ({"api_host": "0.0.0.0"}, "the API listens on 0.0.0.0 (LAPSE_API_HOST)"),
        ({"api_host": "192.0.2.10"}, "not only on this machine"),
        ({"public_url": "https://lapse.example.com"}, "people reach it at https://lapse.example.com"),
    ],
)
def test_no_passwordless_provider_for_a_real_organisation_or_beyond_this_machine(
    demo: Settings, tmp_path: Path, overrides: dict[str, str], says: str
) -> None:
    """The demo's provider lets whoever opens its form be anyone: with no issuer set, `lapse run` starts it for the
    bundled demo on the loopback only, and otherwise refuses to start, saying what to set."""
    if overrides.get("org_file") == "ORG":
        org = tmp_path / "org.yaml"
        org.write_text(DEMO_ORG.read_text())  # the demo's people, but a file of one's own: a real deployment
        overrides = {"org_file": str(org)}
    settings = demo.model_copy(update={k: Path(v) if k == "org_file" else v for k, v in overrides.items()})
    env: dict[str, str] = {}
    with contextlib.ExitStack() as cleanup, pytest.raises(SystemExit) as refused:
        stack.demo_sign_in(settings, env, cleanup)
    message = str(refused.value)
    assert says in message, message
    assert "LAPSE_OIDC_ISSUER" in message and "LAPSE_AUTH=proxy" in message
    assert env == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"org_file": DEMO_ORG},
        {"api_host": "localhost", "public_url": "http://localhost:8000"},
        {"api_host": "::1", "public_url": "http://[::1]:8000"},
        {"public_url": "http://127.0.0.2:8000"},
    ],
)
def test_the_bundled_demo_on_this_machine_gets_the_demo_provider(demo: Settings, overrides: dict[str, Any]) -> None:
    settings = demo.model_copy(update=overrides)
    with contextlib.ExitStack() as cleanup:
        issuer = stack.demo_sign_in(settings, {}, cleanup)
        assert issuer is not None and issuer.startswith("http://127.0.0.1:")
