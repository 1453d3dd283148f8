"""``lapse``: the command line over the API, plus the commands that run Lapse itself."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from store.settings import get_settings

app = typer.Typer(
    help="Lapse: just-in-time access that lapses on its own.\n\n"
    "Client commands talk to the API as the user given by --as (or LAPSE_USER).",
    no_args_is_help=True,
    add_completion=False,
)

_state: dict[str, Any] = {}


@app.callback()
def _options(
    as_user: Annotated[
        str | None, typer.Option("--as", envvar="LAPSE_USER", help="Act as this user (email), as the SSO proxy would.")
    ] = None,
    api: Annotated[str | None, typer.Option(envvar="LAPSE_API_URL", help="The API's base URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a summary.")] = False,
) -> None:
    _state.update(user=as_user, api=api or get_settings().api_url, json=as_json)


def _call(method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> Any:
    if not _state.get("user"):
        _fail("say who you are: lapse --as you@example.com … (or set LAPSE_USER)")
    try:
        response = httpx.request(
            method,
            f"{_state['api']}{path}",
            json=body,
            params=params,
            headers={"X-Forwarded-Email": _state["user"]},
            timeout=60,
        )
    except httpx.HTTPError as error:
        _fail(f"cannot reach the Lapse API at {_state['api']}: {error} (is `lapse run` running?)")
    if response.status_code >= 400:
        try:
            problem = response.json()
            _fail(f"{problem.get('title', 'Error')} ({response.status_code}): {problem.get('detail')}")
        except ValueError:
            _fail(f"{response.status_code}: {response.text}")
    data = response.json()
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


def _fail(message: str) -> None:
    typer.echo(f"error: {_escape(message)}", err=True)
    raise typer.Exit(1)


def _show_request(status: dict[str, Any]) -> None:
    line = f"{status['id']}  {status['state']:<12} {status['role']}  for {status['duration']}  by {status['requester']}"
    if status.get("expires_at") and status["state"] in ("active", "revoking"):
        line += f"  until {status['expires_at']}"
    typer.echo(line)
    if status["state"] == "pending":
        for step in status["steps"]:
            if step["state"] == "open":
                approvals = sum(1 for d in step["decisions"] if d["approved"])
                typer.echo(
                    f"    waiting on {step['name']!r}: {approvals}/{step['quorum']} from {', '.join(step['eligible'])}"
                )
    if status.get("end_reason"):
        typer.echo(f"    ended by {status['ended_by']}: {status['end_reason']}")
    if status.get("revoke_error"):
        typer.echo(f"    revoke failing, retrying: {status['revoke_error']}")


def _output(data: Any, show: Any = _show_request) -> None:
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

    _output(_call("GET", "/api/catalog"), show)


@app.command()
def request(
    role: Annotated[str, typer.Argument(help="integration/resource/role, from `lapse catalog`.")],
    duration: Annotated[str, typer.Option("--for", help="How long: ISO 8601 (PT2H) or seconds.")],
    reason: Annotated[str, typer.Option("--reason", help="Why you need it.")] = "",
) -> None:
    """Request a role for a while."""
    _output(_call("POST", "/api/requests", {"role": role, "duration": duration, "justification": reason}))


@app.command()
def status(request_id: str) -> None:
    """A request's state, steps and decisions."""
    _output(_call("GET", f"/api/requests/{request_id}"))


@app.command()
def requests(state: Annotated[str | None, typer.Option(help="Only this state.")] = None) -> None:
    """Your requests (everyone's for admins)."""
    _output(_call("GET", "/api/requests", params={"state": state} if state else None))


@app.command()
def approvals() -> None:
    """What you can approve or deny now."""
    _output(_call("GET", "/api/approvals"))


@app.command()
def approve(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Approve a request (or its pending extension)."""
    _output(_call("POST", f"/api/requests/{request_id}/approve", {"comment": comment}))


@app.command()
def deny(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Deny a request (or its pending extension)."""
    _output(_call("POST", f"/api/requests/{request_id}/deny", {"comment": comment}))


@app.command()
def cancel(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Withdraw a pending request."""
    _output(_call("POST", f"/api/requests/{request_id}/cancel", {"comment": comment}))


@app.command()
def revoke(request_id: str, comment: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Give a grant back now (or, as an admin, take it away)."""
    _output(_call("POST", f"/api/requests/{request_id}/revoke", {"comment": comment}))


@app.command()
def extend(
    request_id: str,
    duration: Annotated[str, typer.Option("--by", help="How much longer: ISO 8601 or seconds.")],
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
) -> None:
    """Ask for more time on an active grant."""
    _output(_call("POST", f"/api/requests/{request_id}/extend", {"duration": duration, "justification": reason}))


@app.command()
def credentials(request_id: str) -> None:
    """Show the login made for your grant (ephemeral credentials). Shown once only: keep them now."""

    def show(shown: dict[str, Any]) -> None:
        typer.echo(f"username: {shown['username']}")
        typer.echo(f"password: {shown['password']}")
        typer.echo(f"valid until: {shown['expires_at'] or 'never'}")
        if shown.get("dsn_hint"):
            typer.echo(f"connect: {shown['dsn_hint']}")

    _output(_call("POST", f"/api/requests/{request_id}/credentials"), show)


@app.command()
def grants(everyone: Annotated[bool, typer.Option("--all", help="Admins: everyone's grants.")] = False) -> None:
    """What you hold, through which path, until when."""

    def show(grant: dict[str, Any]) -> None:
        until = grant["expires_at"] or "never"
        origin = grant["request_id"] or (f"policy {grant['policy']}" if grant.get("policy") else "found in the target")
        typer.echo(f"{grant['role']}  {grant['path']:<10} {grant['account']}  until {until}  ({origin})")

    _output(_call("GET", "/api/grants", params={"all": "true"} if everyone else None), show)


integration_app = typer.Typer(help="Admins: connected systems, their connection tests and discovery.")
app.add_typer(integration_app, name="integrations")


def _show_integration(entry: dict[str, Any]) -> None:
    when = entry["discovered_at"] or "never"
    typer.echo(f"{entry['name']}  {entry['kind']:<9} {entry['roles']} roles  discovered {when}")
    if entry.get("insecure"):
        typer.echo("    INSECURE: insecure: true allows plaintext or unverified TLS to the target")
    if entry.get("discovery_error"):
        typer.echo(f"    last discovery failed: {entry['discovery_error']}")


@integration_app.command("list")
def integrations_list() -> None:
    """The integrations, how many roles each has, and how their last discovery went."""
    _output(_call("GET", "/api/integrations"), _show_integration)


@integration_app.command("test")
def integrations_test(name: str) -> None:
    """Reach the target with the integration's settings (on a worker, which holds the secrets)."""
    result = _call("POST", f"/api/integrations/{name}/test")
    if _state["json"]:
        _output(result)
    elif not result["ok"]:
        _fail(f"{name}: {result['detail']}{' (may pass if retried)' if result['retryable'] else ''}")
    else:
        typer.echo(f"{name}: ok, {result['detail']}")


@integration_app.command("discover")
def integrations_discover(name: str) -> None:
    """Run discovery now: roles and grants in the target, grants made outside Lapse, drift."""

    def show(result: dict[str, Any]) -> None:
        typer.echo(
            f"{name}: {result['roles']} roles ({result['roles_added']} new, {result['roles_missing']} missing), "
            f"{result['grants_seen']} grants seen, {result['external_found']} new external, "
            f"{result['external_gone']} external gone, {result['unlinked_accounts']} unlinked accounts, "
            f"{result['remediated']} drift revoked"
        )

    _output(_call("POST", f"/api/integrations/{name}/discover"), show)


@integration_app.command("roles")
def integrations_roles(name: str) -> None:
    """The integration's roles: JIT-only, missing from the target, how many hold each."""

    def show(role: dict[str, Any]) -> None:
        flags = [f for f, on in (("jit-only", role["jit_only"]), ("MISSING", role["missing"])) if on]
        typer.echo(f"{role['path']}  {role['holders']} holders  {' '.join(flags)}".rstrip())

    _output(_call("GET", f"/api/integrations/{name}/roles"), show)


directory_app = typer.Typer(help="Admins: the directory sync (joiners, movers, leavers).")
app.add_typer(directory_app, name="directory")


@directory_app.command("sync")
def directory_sync() -> None:
    """Run the directory sync now; `lapse directory status` shows how it went."""
    _output(_call("POST", "/api/directory/sync"), lambda _: typer.echo("directory sync started"))


@directory_app.command("status")
def directory_status() -> None:
    """The directory sync's last run: when, joiners, movers and leavers, or why it failed."""

    def details(summary: dict[str, Any]) -> None:
        if not summary:
            return
        typer.echo(
            f"    {', '.join(summary['sources'])}: {summary['users']} users, {summary['groups']} groups; "
            f"{summary['joined']} joined, {summary['moved']} moved, {summary['left']} left"
        )
        for leaver in summary["leavers"]:
            typer.echo(f"    left: {leaver['email']} ({leaver['why']})")

    _output(_call("GET", "/api/directory/sync"), lambda state: _show_sync("directory", state, details))


@directory_app.command("groups")
def directory_groups(
    source: Annotated[str | None, typer.Option(help="Only this source's groups (file or an integration).")] = None,
    name: Annotated[str | None, typer.Option(help="Only groups of this name, from every source.")] = None,
) -> None:
    """Groups by source, with the reference a policy uses to name each one (and namesakes to beware of)."""

    def show(group: dict[str, Any]) -> None:
        namesakes = f"  ({group['namesakes']} other group(s) of this name)" if group["namesakes"] else ""
        typer.echo(f"{group['reference']}  {group['source']}  {group['name']}  {group['members']} members{namesakes}")

    params = {key: value for key, value in (("source", source), ("name", name)) if value is not None}
    _output(_call("GET", "/api/directory/groups", params=params), show)


def _show_sync(name: str, state: dict[str, Any], details: Callable[[dict[str, Any]], None]) -> None:
    """A sync's last run: when it started and finished, why it failed, then its own details."""
    if state["started_at"] is None:
        typer.echo(f"the {name} sync has not run yet")
        return
    finished = f"finished {state['finished_at']}" if state["finished_at"] else "still running"
    typer.echo(f"started {state['started_at']}, {finished}")
    if state.get("error"):
        typer.echo(f"    last run failed: {state['error']}")
    details(state["summary"])


birthright_app = typer.Typer(help="Admins: birthright policies and their sync.")
app.add_typer(birthright_app, name="birthright")


@birthright_app.command("policies")
def birthright_policies() -> None:
    """The policies in order: which groups get which roles, and how many grants each accounts for."""

    def show(policy: dict[str, Any]) -> None:
        typer.echo(f"{policy['position'] + 1}. {policy['name']}  {policy['grants']} grants")
        typer.echo(f"    groups {', '.join(policy['groups'])} → roles {', '.join(policy['roles'])}")

    _output(_call("GET", "/api/birthright/policies"), show)


@birthright_app.command("preview-delete")
def birthright_preview_delete(name: str) -> None:
    """Who would lose which role if the policy were deleted (nothing is changed)."""

    def show(plan: dict[str, Any]) -> None:
        for loss in plan["losses"]:
            typer.echo(f"loses {loss['role']}: {loss['user']}")
        for relabel in plan["relabels"]:
            typer.echo(f"keeps {relabel['role']} through {relabel['policy']}: {relabel['user']}")
        if not plan["losses"] and not plan["relabels"]:
            typer.echo("nobody loses anything")

    _output(_call("POST", "/api/birthright/preview", {"action": "delete", "name": name}), show)


@birthright_app.command("sync")
def birthright_sync() -> None:
    """Run the birthright sync now; `lapse birthright status` shows how it went."""
    _output(_call("POST", "/api/birthright/sync"), lambda _: typer.echo("birthright sync started"))


@birthright_app.command("status")
def birthright_status() -> None:
    """The birthright sync's last run: when, what it planned and did, or why it failed."""

    def details(summary: dict[str, Any]) -> None:
        if "added" in summary:
            typer.echo(
                f"    {summary['added']} granted, {summary['removed']} revoked, {summary['relabelled']} re-attributed, "
                f"{summary['failed']} failed"
            )

    _output(_call("GET", "/api/birthright/sync"), lambda state: _show_sync("birthright", state, details))


audit_app = typer.Typer(help="Admins: the audit log and its integrity check.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's MAC chain and that it reaches the head checkpointed outside the app DB.

    Exits 1 and says what is wrong and where (the first broken sequence number) if anything is.
    """
    check = _call("GET", "/api/audit/verify")

    def show(check: dict[str, Any]) -> None:
        verdict = "intact" if check["intact"] else f"NOT INTACT from event {check['first_altered']}"
        head = check.get("checkpoint")
        reaches = f", checkpoint at {head['seq']} ({head['file']})" if head else ", no checkpoint"
        typer.echo(f"audit log {verdict}: {check['events']} events, last {check['last_seq']}{reaches}")
        for problem in check["problems"]:
            where = f"event {problem['seq']}" if problem["seq"] is not None else "log"
            typer.echo(f"    {problem['kind']} at {where}: {problem['detail']}")
        for note in check["notes"]:
            typer.echo(f"    note: {note}")

    _output(check, show)
    if not check["intact"]:
        raise typer.Exit(1)


@app.command()
def run() -> None:
    """Run Lapse: the Temporal dev server, a worker and the API, with the demo organisation."""
    from starter.stack import run_stack

    run_stack(get_settings())


@app.command("load-org")
def load_org_file(path: str) -> None:
    """Load (or update) users, groups, integrations, approval workflows and birthright policies from a YAML file."""
    from pathlib import Path

    from store.db import migrate, session_scope
    from store.org import OrgError, OrgFile, load_org

    settings = get_settings()
    migrate(settings.db_url)
    try:
        org = OrgFile.read(Path(path))
        with session_scope(settings.db_url) as session:
            load_org(session, org)
    except OrgError as error:
        _fail(str(error))
    typer.echo(f"loaded {path}")
    typer.echo(asyncio.run(_apply_schedules(settings, sync_birthright=bool(org.birthright_policies))))


async def _apply_schedules(settings: Any, *, sync_birthright: bool) -> str:
    """New integrations get their discovery schedules, and new policies a birthright sync, now."""
    from access import names
    from starter.integrations import ensure_schedules
    from starter.syncs import ensure_sync_schedules, trigger_sync
    from store.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        discovery = await ensure_schedules(client, settings)
        await ensure_sync_schedules(client, settings)
        if sync_birthright:
            await trigger_sync(client, names.BIRTHRIGHT_SYNC)
    except (RuntimeError, OSError, TimeoutError) as error:
        return f"Temporal is not reachable ({error}): schedules are brought up to date when the API next starts"
    started = "; birthright sync started" if sync_birthright else ""
    return f"schedules up to date: {', '.join(discovery) or 'no discovery schedules'}{started}"


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
