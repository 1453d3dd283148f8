"""``lapse login`` and ``lapse logout``: the API token every command sends, kept per API in the user's config
directory (mode 0600), and who each call is made as.

``lapse login`` signs in through a browser by default: the API hosts RFC 8628's device flow
(``starter/services/device.py``), so it shows a URL and a code, the person approves it in a browser signed in to
Lapse as usual (OIDC or the SSO proxy), and the CLI collects a new API token of theirs; it never sees the
identity provider. ``--token -`` and ``--paste`` take a token made on the API tokens page instead. Either way no
token goes over plain http to another machine. Registered on ``starter.cli.app`` when that module is imported;
calls go through its client.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from starter import cli

# --- the kept tokens, by API URL ---------------------------------------------------------------------


def credentials_path() -> Path:
    """``$XDG_CONFIG_HOME/lapse/credentials.json`` (``~/.config`` by default): the kept tokens, by API URL."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lapse" / "credentials.json"


def read_credentials() -> dict[str, Any]:
    path = credentials_path()
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        cli._fail(f"cannot read the kept credentials in {path}: {error}", "delete the file and `lapse login` again")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        typer.echo(f"warning: {path} can be read by others: `chmod 600 {path}`", err=True)
    return data if isinstance(data, dict) else {}


def write_credentials(credentials: dict[str, Any]) -> Path:
    """Write the kept tokens, readable by their owner only (0600, in a 0700 directory), replacing the file whole."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        json.dump(credentials, file, indent=2)
    os.replace(temporary, path)
    return path


def plain_http_elsewhere(api: str) -> bool:
    """Whether ``api`` is reached over plain http on another machine, where anyone on the way reads a token."""
    parts = urlsplit(api)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def refuse_plain_http() -> None:
    """End the command if a token would cross the network in the clear to the API (``--api``): sent, or received."""
    api = cli._state["api"]
    if plain_http_elsewhere(api):
        cli._fail(
            f"refusing to send an API token to {api} over plain http: anyone on the way could read it and act as you",
            "use the API's https:// URL (--api or LAPSE_API_URL); plain http only to this machine (localhost)",
        )


def bearer(token: str) -> dict[str, str]:
    """The header sending ``token`` to the API: never over plain http to another machine."""
    refuse_plain_http()
    return {"Authorization": f"Bearer {token.strip()}"}


def identity() -> dict[str, str]:
    """Who the commands call as: ``--as`` (the SSO proxy's header), else ``LAPSE_TOKEN``, else the token kept
    for this API by ``lapse login``."""
    if cli._state.get("user"):
        return {"X-Forwarded-Email": cli._state["user"]}
    entry = read_credentials().get(cli._state["api"])
    token = os.environ.get("LAPSE_TOKEN") or (entry.get("token") if isinstance(entry, dict) else None)
    if not token:
        cli._fail(
            f"say who you are: lapse --as you@example.com … behind an SSO proxy (or set LAPSE_USER), or sign in to "
            f"{cli._state['api']} with `lapse login`"
        )
    return bearer(str(token))


# --- signing in through a browser (RFC 8628, hosted by the API) --------------------------------------

SLOW_DOWN = 5
"""Seconds added to the wait between polls each time the API answers ``slow_down`` (RFC 8628, 3.5)."""
INTERRUPTED = 130
"""The exit status of a command stopped by Ctrl-C, as shells report it."""


def client_name() -> str:
    """What the person approving is told the CLI runs on: this machine's host name, in plain characters."""
    name = re.sub(r"[^A-Za-z0-9._@-]+", "-", socket.gethostname()).strip("-._@")[:100]
    return name or "unnamed-host"


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _browser_sign_in() -> str | None:
    """A new API token that its person approved in a browser; None if the API offers no browser sign-in (a Lapse
    from before it). Ends the command when it is denied, expires, or is stopped."""
    api = cli._state["api"]
    response = cli._send("POST", "/auth/device", {"client_name": client_name()}, headers={})
    if response.status_code in (404, 405):
        return None
    if response.is_redirect:  # an SSO proxy sending the CLI to its own sign-in page
        cli._fail(
            f"{api} sent `lapse login` to {response.headers.get('location', 'another page')} to sign in: behind an SSO "
            "proxy, /auth/device and /auth/device/token must be let through without its sign-in",
            "or sign in with a token made on Lapse's API tokens page: `lapse login --paste`",
        )
    started = cli._answer(response, "POST /auth/device")
    device_code, code = str(started["device_code"]), str(started["user_code"])
    interval = max(1, int(started["interval"]))
    deadline = time.monotonic() + int(started["expires_in"])
    # Not verification_uri_complete: the page asks for the code all the same (a link's is a hint only, RFC 8628
    # 5.4), and a person who types it is one who read it here, in their own terminal.
    typer.echo(f"To sign in, open {started['verification_uri']} in a browser signed in to Lapse and type the code")
    typer.echo(f"\n    {code}\n")
    typer.echo(f"Waiting for you to approve it there (for {int(started['expires_in']) // 60} minutes; Ctrl-C stops)…")
    try:
        while time.monotonic() < deadline:
            _pause(interval)
            polled = cli._send("POST", "/auth/device/token", {"device_code": device_code}, headers={})
            answer = _json(polled)
            if polled.status_code == 200 and isinstance(answer.get("access_token"), str):
                return str(answer["access_token"])
            error, said = answer.get("error"), cli.printable(str(answer.get("error_description") or ""))
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN
                continue
            if error == "access_denied":
                cli._fail(f"the sign-in was not approved: {said or 'denied'}", "nothing was kept")
            if error == "expired_token":
                break
            cli._fail(
                f"{api} answered {polled.status_code} to POST /auth/device/token"
                + (f": {error}: {said}" if error else ", not as the Lapse API does"),
                "run `lapse login` again",
            )
    except KeyboardInterrupt:
        typer.echo(f"\nstopped: not signed in, nothing kept (the code {code} is of no use to anyone now)", err=True)
        raise typer.Exit(INTERRUPTED) from None
    cli._fail(f"the code {code} expired before it was approved", "run `lapse login` again for a new one")


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- the commands ------------------------------------------------------------------------------------


@cli.app.command()
def login(
    token: Annotated[
        str | None,
        typer.Option(
            help="`-`: read an API token made on Lapse's API tokens page from standard input (a pipe, a secret "
            "file) instead of signing in through a browser. A token given here instead of `-` is seen by other "
            "users' `ps` and kept in your shell's history: prefer `-` or --paste."
        ),
    ] = None,
    paste: Annotated[
        bool, typer.Option("--paste", help="Paste an API token made on Lapse's API tokens page, asked for unechoed.")
    ] = False,
) -> None:
    """Sign in to the API (--api) and keep the token (mode 0600 in `$XDG_CONFIG_HOME/lapse/credentials.json`):
    every command then sends it.

    By default through a browser: `lapse login` shows a URL and a code; open the URL in a browser signed in to
    Lapse, type the code, check what is asked, and approve. The CLI then gets a new API token of yours, named `lapse
    CLI on <this host>`, with your rights (read, request, approve; admin only if an admin ticks it there), valid for
    the server's LAPSE_DEVICE_TOKEN_LIFETIME (30 days unless set otherwise); revoke it on the API tokens page.
    With --paste or `--token -`, use a token made there instead (`lapse login --token - < token-file` in a
    script). Never over plain http to another machine."""
    refuse_plain_http()
    if token == "-":
        token = sys.stdin.readline()
    elif token is None and paste:
        token = typer.prompt("API token", hide_input=True)
    elif token is None:
        token = _browser_sign_in()
        if token is None:
            older = f"{cli._state['api']} offers no sign-in through a browser (a Lapse from before it)"
            if not sys.stdin.isatty():
                cli._fail(older, "pipe a token made on its API tokens page to `lapse login --token -`")
            typer.echo(f"{older}: paste a token made on its API tokens page.")
            token = typer.prompt("API token", hide_input=True)
    token = token.strip()
    if not token:
        cli._fail(
            "no API token given", "paste it when `lapse login --paste` asks, or pipe it to `lapse login --token -`"
        )
    me = cli._call("GET", "/api/me", headers=bearer(token))
    credentials = read_credentials()
    credentials[cli._state["api"]] = {"token": token, "email": me["email"], "token_id": me.get("token_id")}
    path = write_credentials(credentials)
    scopes = ", ".join(me.get("scopes") or []) or "none"
    typer.echo(f"signed in to {cli._state['api']} as {me['email']} (token scopes: {scopes}); kept in {path}")


@cli.app.command()
def logout(
    revoke: Annotated[bool, typer.Option("--revoke", help="Also revoke the token, so that it works nowhere.")] = False,
) -> None:
    """Forget the token kept for the API (--api); with --revoke, revoke it there first."""
    api = cli._state["api"]
    credentials = read_credentials()
    entry = credentials.get(api)
    if not isinstance(entry, dict) or not entry.get("token"):
        typer.echo(f"no token kept for {api}: nothing to forget")
        return
    done = "forgot"
    if revoke:
        sent = bearer(str(entry["token"]))
        me = cli._call("GET", "/api/me", headers=sent, none_on=(401,))
        if me is None:
            done = "forgot (it no longer worked there: expired, revoked, or its owner gone)"
        else:
            cli._call("DELETE", f"/api/tokens/{me['token_id']}", headers=sent)
            done = "revoked and forgot"
    del credentials[api]
    write_credentials(credentials)
    typer.echo(f"{done} the token for {api}")
