"""``lapse``: the command line. Every command but ``run`` (and ``api``, ``worker``, ``notifier``, ``migrate``:
``starter.cli_serve``) is a client of the API and of nothing else.

This module holds the client (where the API is, the one call every command makes, errors that end the command),
the requester's and approver's commands, and ``lapse run``. Signing in (``login``, ``logout``, the token kept
for each API and who every call is made as) is in ``starter.cli_login``; the admins' commands (integrations,
directory, birthright, audit, load-org) are in ``starter.cli_admin``; access reviews (``lapse reviews``) in
``starter.cli_reviews``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.core import TyperGroup

from store.settings import Settings, get_settings

API_HELP = (
    "The API's base URL (default: http://LAPSE_API_HOST:LAPSE_API_PORT, i.e. http://127.0.0.1:8000, as `lapse run` "
    "serves it). Every command but `run`, `api`, `worker`, `notifier` and `migrate` talks to this API and nothing else."
)


class _Commands(TyperGroup):
    """The commands, each ending with exit 1 and a message instead of a traceback when what answered is not
    shaped like the Lapse API's answers (a key missing, a list where an object was expected)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
            answered = _state.get("answered")
            if answered is None:
                raise
            what = f"missing {error}" if isinstance(error, KeyError) else type(error).__name__
            api = _state["api"]
            _fail(
                f"{api} answered {answered} with JSON the Lapse API does not send ({what}): it is not the Lapse "
                f"API at {api} (or not a version this CLI knows); {_ELSEWHERE}"
            )


app: typer.Typer = typer.Typer(
    cls=_Commands,
    help="Lapse: just-in-time access that lapses on its own.\n\n"
    "`run` starts all of Lapse on this machine; `api`, `worker`, `notifier` and `migrate` run its processes one at a "
    "time. Every other command is a client of the Lapse API (--api or LAPSE_API_URL; default "
    "http://LAPSE_API_HOST:LAPSE_API_PORT), signed in with the API token `lapse login` keeps (or LAPSE_TOKEN), "
    "or, behind an SSO proxy, acting as the user given by --as (or LAPSE_USER).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # help paragraphs reflow to the terminal; settings render as a list
)

_state: dict[str, Any] = {}


@app.callback()
def _options(
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            envvar="LAPSE_USER",
            help="Behind an SSO proxy (LAPSE_AUTH=proxy): act as this user (email), as the proxy would say. "
            "Without it, commands send the token `lapse login` kept.",
        ),
    ] = None,
    api: Annotated[str | None, typer.Option(envvar="LAPSE_API_URL", help=API_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a summary.")] = False,
) -> None:
    _state.update(user=as_user, api=(api or _default_api()).rstrip("/"), json=as_json, answered=None)


class _ApiAddress(BaseSettings):
    """Where ``lapse run`` serves the API: the only server settings the CLI reads (from the environment or
    ``.env``, as ``lapse run`` does), so that a setting only the server uses cannot stop a command."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_", env_file=".env", extra="ignore")

    api_host: str = Settings.model_fields["api_host"].default
    api_port: int = Settings.model_fields["api_port"].default


def _default_api() -> str:
    """``http://LAPSE_API_HOST:LAPSE_API_PORT``, as ``lapse run`` serves it."""
    try:
        address = _ApiAddress()
    except ValidationError as error:
        wrong = "; ".join(f"LAPSE_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        _fail(f"cannot tell where the Lapse API is: {wrong}", f"fix it, or {_ELSEWHERE}")
    return f"http://{address.api_host}:{address.api_port}"


_ELSEWHERE = "point the CLI at another with --api URL or LAPSE_API_URL"


TIMEOUT = httpx.Timeout(300, connect=10)
"""An unreachable API fails at once; a slow answer (a large organisation file, a first discovery) is waited for."""


def _send(
    method: str, path: str, body: Any = None, params: dict[str, Any] | None = None, *, headers: dict[str, str]
) -> httpx.Response:
    """The API's response to one call sent with ``headers``, whatever its status; a call that gets no response
    ends the command (exit 1) saying so."""
    api = _state["api"]
    if method not in ("GET", "HEAD", "OPTIONS"):
        # Every change is declared JSON, even without a body: behind an SSO proxy, what no other site's page can
        # send without a CORS preflight needs no CSRF token (starter/api/security.py).
        headers = {**headers, "Content-Type": "application/json"}
    try:
        return httpx.request(method, f"{api}{path}", json=body, params=params, headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as error:
        _fail(
            f"cannot reach the Lapse API at {api}: {error or type(error).__name__}",
            f"start Lapse with `lapse run`, or {_ELSEWHERE}",
        )


def _call(
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    none_on: tuple[int, ...] = (),
) -> Any:
    """The API's answer to one call, as the signed-in user (``cli_login.identity``) unless ``headers`` say who;
    any failure ends the command (exit 1) saying what went wrong and how to point the CLI at another API (a
    status in ``none_on`` answers None instead)."""
    who = headers if headers is not None else cli_login.identity()
    response = _send(method, path, body, params, headers=who)
    if response.status_code in none_on:
        return None
    return _answer(response, f"{method} {path}", stale_token=headers is None and "Authorization" in who)


def _answer(response: httpx.Response, call: str, *, stale_token: bool = False) -> Any:
    """The JSON of the API's answer to ``call`` (``POST /api/requests``), its text made printable; an error, or an
    answer unlike the Lapse API's, ends the command (exit 1) saying what went wrong. ``stale_token``: the call was
    made with the kept token, which a 401 then says no longer works."""
    api = _state["api"]
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400 and isinstance(data, dict) and "status" in data:
        errors = [f"    {e.get('field')}: {e.get('message')}" for e in data.get("errors") or [] if isinstance(e, dict)]
        stale = stale_token and response.status_code == 401
        _fail(
            f"{data.get('title', 'Error')} ({response.status_code}): {data.get('detail')}",
            *(errors if len(errors) > 1 else []),
            *([f"the token kept for {api} no longer works: make a new one and `lapse login` again"] if stale else []),
            f"(the Lapse API at {api} answered; {_ELSEWHERE})",
        )
    if response.status_code >= 400 or data is None:
        _fail(f"{api} answered {response.status_code} to {call}, not as the Lapse API does: {_ELSEWHERE}")
    # From here on, an answer shaped unlike the Lapse API's ends the command saying so (``_Commands``).
    _state["answered"] = call
    # --json prints JSON, whose strings escape control characters; summaries print text: escape it here.
    return data if _state.get("json") else printable(data)


_INVISIBLE = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
"""Bidirectional overrides and marks: text that reorders what a terminal shows after it."""


def _escape(text: str) -> str:
    def code(c: str) -> str:
        n = ord(c)
        if n < 0x20 or 0x7F <= n < 0xA0 or n in _INVISIBLE:
            return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}")
        return c

    return "".join(code(c) for c in text)


def printable(data: Any) -> Any:
    """``data`` (an API answer) with every string's control characters escaped (``\\x1b``, ``\\n``), so text
    someone else wrote (a justification, a comment, a name) can neither drive the terminal nor fake a line."""
    if isinstance(data, str):
        return _escape(data)
    if isinstance(data, list):
        return [printable(item) for item in data]
    if isinstance(data, dict):
        return {printable(key): printable(value) for key, value in data.items()}
    return data


def _fail(*lines: str) -> NoReturn:
    """End the command with exit code 1, each line escaped (what the API said may hold anything)."""
    typer.echo("\n".join(f"{'error: ' if i == 0 else ''}{_escape(line)}" for i, line in enumerate(lines)), err=True)
    raise typer.Exit(1)


def when(value: str | None, *, none: str = "never") -> str:
    """An API time as ISO 8601 UTC to the second (``2026-12-01T12:02:05Z``), or ``none`` for no time."""
    if not value:
        return none
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def count(n: int, one: str, many: str | None = None) -> str:
    """``1 grant``, ``3 grants``, ``2 policies``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _show_steps(steps: list[dict[str, Any]], indent: str = "    ") -> None:
    for step in steps:
        if step["state"] == "open":
            approvals = sum(1 for d in step["decisions"] if d["approved"])
            eligible = ", ".join(step["eligible"]) or "nobody"
            typer.echo(f"{indent}waiting on {step['name']!r}: {approvals}/{step['quorum']} from {eligible}")


def _show_request(status: dict[str, Any]) -> None:
    line = f"{status['id']}  {status['state']:<12} {status['role']}  for {status['duration']}  by {status['requester']}"
    if status.get("expires_at") and status["state"] in ("active", "revoking"):
        line += f"  until {when(status['expires_at'])}"
    typer.echo(line)
    if status["state"] == "pending":
        _show_steps(status["steps"])
    for extension in status.get("extensions") or []:
        _show_extension(extension, active=status["state"] == "active")
    if status.get("ended_by"):
        reason = f": {status['end_reason']}" if status.get("end_reason") else ""
        typer.echo(f"    ended by {status['ended_by']}{reason}")
    if status.get("revoke_error"):
        typer.echo(f"    revoke failing, retrying: {status['revoke_error']}")


def _show_extension(extension: dict[str, Any], *, active: bool) -> None:
    """An extension and its fate; a pending one with who must approve it (the expiry above stands until then)."""
    state = extension["state"]
    line = f"    extension by {extension['duration']} (asked {when(extension['requested_at'])}): {state}"
    if state == "pending":
        line += ", the time above stands unless it is approved" if active else ""
        typer.echo(line)
        _show_steps(extension["steps"], "        ")
    else:
        typer.echo(line + (", the grant ended before it was decided" if state == "lapsed" else ""))


def output(data: Any, show: Any = _show_request) -> None:
    if _state["json"]:
        typer.echo(json.dumps(data, indent=2))
    elif isinstance(data, list):
        for item in data:
            show(item)
        if not data:
            typer.echo("(none)")
    else:
        show(data)


@app.command()
def catalog() -> None:
    """The roles you can request, how long for, and who approves."""

    def show(entry: dict[str, Any]) -> None:
        typer.echo(f"{entry['role']}  ({entry['sensitivity']}) {entry['description']}")
        for option in entry["options"]:
            typer.echo(f"    up to {option['up_to']}: {'; then '.join(option['approval'])}")

    output(_call("GET", "/api/catalog"), show)


@app.command()
def request(
    role: Annotated[str, typer.Argument(help="integration/resource/role, from `lapse catalog`.")],
    duration: Annotated[str, typer.Option("--for", help="How long: ISO 8601 (PT2H) or seconds.")],
    reason: Annotated[str, typer.Option("--reason", help="Why you need it.")] = "",
) -> None:
    """Request a role for a while."""
    output(_call("POST", "/api/requests", {"role": role, "duration": duration, "justification": reason}))


@app.command()
def status(request_id: str) -> None:
    """A request's state, steps and decisions, and its extensions (a pending one with who must approve it)."""
    output(_call("GET", f"/api/requests/{request_id}"))


@app.command()
def requests(state: Annotated[str | None, typer.Option(help="Only this state.")] = None) -> None:
    """Your requests (everyone's for admins)."""
    output(_call("GET", "/api/requests", params={"state": state} if state else None))


@app.command()
def approvals() -> None:
    """What you can approve or deny now: pending requests, and pending extensions of active grants."""
    output(_call("GET", "/api/approvals"))


@app.command()
def approve(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Approve a request (or its pending extension)."""
    output(_call("POST", f"/api/requests/{request_id}/approve", {"comment": comment}))


@app.command()
def deny(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Deny a request (or its pending extension)."""
    output(_call("POST", f"/api/requests/{request_id}/deny", {"comment": comment}))


@app.command()
def cancel(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Withdraw a pending request."""
    output(_call("POST", f"/api/requests/{request_id}/cancel", {"comment": comment}))


@app.command()
def revoke(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Give a grant back now (or, as an admin, take it away)."""
    output(_call("POST", f"/api/requests/{request_id}/revoke", {"comment": comment}))


@app.command()
def extend(
    request_id: str,
    duration: Annotated[str, typer.Option("--by", help="How much longer: ISO 8601 or seconds.")],
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
) -> None:
    """Ask for more time on an active grant.

    At once where its rule allows; otherwise once approved, as the request was (usually by your manager:
    `lapse status` shows who), and the grant keeps its current end until then.
    """
    output(_call("POST", f"/api/requests/{request_id}/extend", {"duration": duration, "justification": reason}))


@app.command()
def credentials(request_id: str) -> None:
    """Show the login made for your grant (ephemeral credentials). Shown once only: keep them now."""

    def show(shown: dict[str, Any]) -> None:
        typer.echo(f"username: {shown['username']}")
        typer.echo(f"password: {shown['password']}")
        typer.echo(f"valid until: {when(shown['expires_at'])}")
        if shown.get("dsn_hint"):
            typer.echo(f"connect: {shown['dsn_hint']}")

    output(_call("POST", f"/api/requests/{request_id}/credentials"), show)


@app.command()
def grants(everyone: Annotated[bool, typer.Option("--all", help="Admins: everyone's grants.")] = False) -> None:
    """What you hold, through which path, until when (standing: no end)."""

    def show(grant: dict[str, Any]) -> None:
        until = f"until {when(grant['expires_at'])}" if grant["expires_at"] else "standing"
        origin = grant["request_id"] or (f"policy {grant['policy']}" if grant.get("policy") else "found in the target")
        typer.echo(f"{grant['role']}  {grant['path']:<10} {grant['account']}  {until}  ({origin})")

    output(_call("GET", "/api/grants", params={"all": "true"} if everyone else None), show)


RUN_HELP = """Run Lapse here: the Temporal dev server, a worker and the API, with the demo organisation.

Unlike every other command, `run` talks to no API: it starts one. It reads these settings from the
environment, or from a `.env` file in the current directory (the README's Configuration has them all):

- `LAPSE_DATA_DIR` (`data`): the app DB, Temporal's file, the keys and the logs
- `LAPSE_DATABASE_URL` (SQLite in the data dir): the app DB
- `LAPSE_API_HOST`, `LAPSE_API_PORT` (`127.0.0.1`, `8000`): where the API listens, and so the other
  commands' default `--api`
- `LAPSE_TEMPORAL_ADDRESS` (`localhost:7233`): the embedded dev server's address, or your own cluster's
- `LAPSE_EMBEDDED_TEMPORAL` (`true`): `false` to use your own Temporal at that address
- `LAPSE_TEMPORAL_UI_PORT` (`8233`): the dev server's Web UI
- `LAPSE_ORG_FILE` (the demo): the organisation file loaded on first start
- `LAPSE_DEMO_PG_DSN` (`postgresql://postgres@127.0.0.1:5432/postgres`, `off` to skip): the demo's PostgreSQL
- `LAPSE_CODEC_KEY`, `LAPSE_AUDIT_KEY`, `LAPSE_SECRET_KEY` (key files in the data dir)

Integration secrets named by `*_env` are read by the worker from the environment `lapse run` started
with: restart it after changing one, or name a file in `LAPSE_SECRETS_DIR` with `*_file` (read on each use).
"""


@app.command(help=RUN_HELP)
def run() -> None:
    from starter.stack import run_stack

    run_stack(get_settings())


# Signing in and the admins' commands register themselves on ``app``: imported last, since they use what is above.
from starter import cli_admin, cli_login, cli_reviews, cli_serve  # noqa: E402, F401


def main() -> None:
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.stdout.flush()
    os._exit(0)
