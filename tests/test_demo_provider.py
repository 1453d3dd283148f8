"""``lapse run``'s demo identity provider: started only when sign-in is OIDC with no issuer, on 127.0.0.1 only,
with the app DB's people on its form, the API pointed at it, and the banner saying how to sign in."""

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
