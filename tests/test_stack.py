"""``lapse run``: what it prints about the app DB never includes the database password; its "Try:" lines fit the
way people sign in; the API it starts sees the real client address."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.main import main as uvicorn_cli

from harness.ports import free_port
from starter import stack
from store.codec import CodecKeyError
from store.db import shown_url
from store.settings import Settings

PASSWORD = "s3cret-Pa55"


def test_run_names_the_app_db_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=f"postgresql+psycopg://lapse:{PASSWORD}@db.example:5432/lapse?sslmode=require"
    )
    monkeypatch.setattr(stack, "prepare_database", lambda _settings: False)  # no PostgreSQL here

    def stop_after_the_app_db(_settings: Settings) -> None:
        raise CodecKeyError("stopped by the test")  # the step after the app DB: start nothing

    monkeypatch.setattr(stack, "codec_keys", stop_after_the_app_db)
    with pytest.raises(SystemExit, match="stopped by the test"):
        stack.run_stack(settings)

    printed = capsys.readouterr().out
    assert "app DB ready (postgresql+psycopg://lapse:***@db.example:5432/lapse?sslmode=require)" in printed
    assert PASSWORD not in printed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://lapse:s3cret-Pa55@db.example/lapse", "postgresql://lapse:***@db.example/lapse"),
        (
            "postgresql+psycopg://lapse@db.example/lapse?password=s3cret-Pa55&sslmode=require",
            "postgresql+psycopg://lapse@db.example/lapse?sslmode=require",
        ),
        ("sqlite:////var/lib/lapse/lapse.db", "sqlite:////var/lib/lapse/lapse.db"),
        ("not a url: s3cret-Pa55", "(an app DB URL that cannot be read)"),
    ],
)
def test_a_shown_app_db_url_has_no_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown


# --- the API's client address, and the banner --------------------------------------------------


def _uvicorn_options(command: list[str]) -> dict[str, Any]:
    """What uvicorn makes of ``command`` (``python -m uvicorn …``): its own command line parser's answer."""
    assert command[1:3] == ["-m", "uvicorn"], command
    return dict(uvicorn_cli.make_context("uvicorn", command[3:]).params)


async def _client_seen(options: dict[str, Any], headers: dict[str, str]) -> str:
    """The client address an app served with uvicorn's ``options`` sees for a request from this machine."""

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        client = scope.get("client") or ("", 0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(client[0]).encode()})

    config = uvicorn.Config(
        echo,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="off",
        proxy_headers=options["proxy_headers"],
        forwarded_allow_ips=options["forwarded_allow_ips"],
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{config.port}/", headers=headers)
        return response.text
    finally:
        server.should_exit = True
        await serving


async def test_the_api_sees_the_real_peer_not_a_forwarded_address(tmp_path: Path) -> None:
    """``LAPSE_TRUSTED_PROXIES`` is checked against the client address uvicorn reports: with its defaults, uvicorn
    replaces it with ``X-Forwarded-For`` from 127.0.0.1, so a local process could pass for the proxy. The API
    ``lapse run`` starts believes no such header."""
    command = stack.api_command(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    options = _uvicorn_options(command)
    assert options["proxy_headers"] is False
    forged = {"X-Forwarded-For": "10.9.9.9"}
    assert await _client_seen(options, forged) == "127.0.0.1"
    # What the flag prevents: uvicorn's defaults take the header's word.
    defaults = _uvicorn_options([*command[:3], "starter.api.app:app"])
    assert await _client_seen(defaults, forged) == "10.9.9.9"


def test_the_banner_in_oidc_mode_says_to_sign_in_and_make_a_token(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    said = stack.try_banner(settings, "http://127.0.0.1:41234")
    assert "--as" not in said
    assert "open http://127.0.0.1:8000/, sign in as alan@example.com" in said
    assert "sign in as linus@example.com and approve it on Approvals" in said
    assert "CLI: lapse login (approve it in the browser), then: lapse catalog" in said

    elsewhere = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, api_port=9001, oidc_issuer="https://login.example.com", oidc_client_id="x"
    )
    said = stack.try_banner(elsewhere, None)
    assert "--as" not in said and "alan@example.com" not in said  # a real provider: nobody is a demo user there
    api = "lapse --api http://127.0.0.1:9001"
    assert f"{api} login (approve it in the browser), then: {api} catalog" in said


def test_the_banner_in_proxy_mode_keeps_as(tmp_path: Path) -> None:
    untrusted = Settings(_env_file=None, data_dir=tmp_path, auth="proxy")  # type: ignore[call-arg]
    said = stack.try_banner(untrusted, None)
    assert said.startswith("Try: lapse --as alan@example.com catalog\n")
    assert "add 127.0.0.1" in said  # the header is ignored from here until this machine is a trusted proxy
    trusted = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, auth="proxy", trusted_proxies=["127.0.0.1"]
    )
    assert stack.try_banner(trusted, None) == "Try: lapse --as alan@example.com catalog\n"
