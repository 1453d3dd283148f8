"""The admins' commands of ``lapse``: load-org, integrations, directory, birthright, audit — each an API call.

Registered on ``starter.cli.app`` when that module is imported; calls go through ``cli._call``, the one
client (which ends the command, non-zero, on any failure).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from starter import cli
from starter.cli import count, output, when

LISTED = 20
"""Joiners, movers and leavers listed by ``directory status`` (``--json`` has every one the API keeps)."""


@cli.app.command("load-org")
def load_org(path: Annotated[Path, typer.Argument(help="The organisation file (YAML, or JSON).")]) -> None:
    """Load (or update) users, groups, integrations, approval workflows and birthright policies (admins).

    The file is sent to the API (POST /api/org), which checks it whole and stores it, then brings the
    discovery schedules up to date and starts what the file implies: a first discovery and directory sync
    where its birthright policies wait on one, and the birthright sync. Exits 1 if any of that fails (the
    file stays stored; what failed is said, and runs again on its schedule).
    """
    try:
        org = yaml.safe_load(path.read_text())
    except OSError as error:
        cli._fail(f"cannot read {path}: {error.strerror or error}")
    except yaml.YAMLError as error:
        cli._fail(f"{path} is not valid YAML: {error}")
    if not isinstance(org, dict | None):
        cli._fail(f"{path} is not an organisation file: its top level must be a mapping (users:, groups:, …)")
    # Round-trip through JSON: YAML's dates and times travel as ISO 8601 text, as the API reads them.
    body = json.loads(json.dumps(org or {}, default=_iso))
    loaded = cli._call("POST", "/api/org", body)
    if cli._state["json"]:
        output(loaded)
    else:
        _show_loaded(str(path), loaded)
    if not loaded["applied"] or loaded.get("failed"):
        cli._fail(f"{path} is stored, but not all it implies was applied: {'; '.join(loaded['notes'])}")


def _iso(value: Any) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not something an organisation file holds")


def _show_loaded(path: str, loaded: dict[str, Any]) -> None:
    sections = {
        "approval_workflows": ("approval workflow", None),
        "birthright_policies": ("birthright policy", "birthright policies"),
    }
    parts = [count(n, *sections.get(name, (name.rstrip("s"), None))) for name, n in loaded["loaded"].items() if n]
    typer.echo(f"loaded {path}: {', '.join(parts) or 'nothing'}")
    if loaded["open_references"]:
        typer.echo(
            "open until a first sync brings them (they grant nothing until then; `lapse directory status` lists them):"
        )
        _show_open(loaded["open_references"])
    started = {"directory-sync": "directory sync started", "birthright-sync": "birthright sync started"}
    for name in loaded["started"]:
        typer.echo(started.get(name, f"{name.replace('discovery-', 'discovery of ', 1)} ran"))
    for name in loaded.get("failed") or []:
        typer.echo(f"{name.replace('discovery-', 'discovery of ', 1)} FAILED", err=True)
    if loaded["schedules"]:
        typer.echo(f"discovery schedules up to date: {', '.join(loaded['schedules'])}")
    for note in loaded["notes"]:
        typer.echo(f"note: {note}", err=True)


def _show_open(references: list[dict[str, Any]]) -> None:
    for reference in references:
        typer.echo(f"    birthright policy {reference['policy']}: {reference['why']}")


def _show_open_references() -> None:
    """The stored birthright policies' references that name nothing now, if any (text output only): those
    waiting for a first sync, then those nothing is to bring."""
    references = cli._call("GET", "/api/org/open-references")
    waiting = [r for r in references if r.get("state", "waiting") == "waiting"]
    unresolved = [r for r in references if r.get("state", "waiting") != "waiting"]
    if waiting:
        typer.echo("open references (they grant nothing until they resolve):")
        _show_open(waiting)
    if unresolved:
        typer.echo(
            "UNRESOLVED references (their sync or discovery is over: they grant nothing until the policy changes):"
        )
        _show_open(unresolved)


integration_app = typer.Typer(help="Admins: connected systems, their connection tests and discovery.")
cli.app.add_typer(integration_app, name="integrations")


def _show_integration(entry: dict[str, Any]) -> None:
    discovered = when(entry["discovered_at"])
    typer.echo(f"{entry['name']}  {entry['kind']:<9} {count(entry['roles'], 'role')}  discovered {discovered}")
    if entry.get("insecure"):
        typer.echo("    INSECURE: insecure: true allows plaintext or unverified TLS to the target")
    if entry.get("discovery_error"):
        typer.echo(f"    last discovery failed: {entry['discovery_error']}")


@integration_app.command("list")
def integrations_list() -> None:
    """The integrations, how many roles each has, and how their last discovery went."""
    output(cli._call("GET", "/api/integrations"), _show_integration)


@integration_app.command("test")
def integrations_test(name: str) -> None:
    """Reach the target with the integration's settings (on a worker, which holds the secrets)."""
    result = cli._call("POST", f"/api/integrations/{name}/test")
    if cli._state["json"]:
        output(result)
    elif not result["ok"]:
        cli._fail(f"{name}: {result['detail']}{' (may pass if retried)' if result['retryable'] else ''}")
    else:
        typer.echo(f"{name}: ok, {result['detail']}")


@integration_app.command("discover")
def integrations_discover(name: str) -> None:
    """Run discovery now: roles and grants in the target, grants made outside Lapse, drift."""

    def show(result: dict[str, Any]) -> None:
        typer.echo(
            f"{name}: {count(result['roles'], 'role')} ({result['roles_added']} new, {result['roles_missing']} "
            f"missing), {count(result['grants_seen'], 'grant')} seen, {result['external_found']} new external, "
            f"{result['external_gone']} external gone, {count(result['unlinked_accounts'], 'unlinked account')}, "
            f"{result['remediated']} drift revoked"
        )

    output(cli._call("POST", f"/api/integrations/{name}/discover"), show)


@integration_app.command("roles")
def integrations_roles(name: str) -> None:
    """The integration's roles: JIT-only, missing from the target, how many hold each."""

    def show(role: dict[str, Any]) -> None:
        flags = [f for f, on in (("jit-only", role["jit_only"]), ("MISSING", role["missing"])) if on]
        typer.echo(f"{role['path']}  {count(role['holders'], 'holder')}  {' '.join(flags)}".rstrip())

    output(cli._call("GET", f"/api/integrations/{name}/roles"), show)


directory_app = typer.Typer(help="Admins: the directory sync (joiners, movers, leavers).")
cli.app.add_typer(directory_app, name="directory")


@directory_app.command("sync")
def directory_sync() -> None:
    """Run the directory sync now; `lapse directory status` shows how it went."""
    output(cli._call("POST", "/api/directory/sync"), lambda _: typer.echo("directory sync started"))


@directory_app.command("status")
def directory_status() -> None:
    """The directory sync's last run: when, who joined, moved and left, or why it failed; then the birthright
    references still waiting for a group.

    A run that would make more than LAPSE_DIRECTORY_MAX_LEAVERS (default 20 %) of a source's active users
    leavers at once is refused (its error says so), unless the source has fewer than 10 active users.
    """

    def details(summary: dict[str, Any]) -> None:
        if not summary:
            return
        typer.echo(
            f"    {', '.join(summary['sources'])}: {count(summary['users'], 'user')}, "
            f"{count(summary['groups'], 'group')}; {summary['joined']} joined, {summary['moved']} moved, "
            f"{summary['left']} left"
        )
        lines = [
            f"joined: {j['email']}" + (f" ({', '.join(j['groups'])})" if j["groups"] else "")
            for j in summary["joiners"]
        ]
        for mover in summary["movers"]:
            changes = [f"+{g}" for g in mover["added"]] + [f"-{g}" for g in mover["removed"]]
            lines.append(f"moved: {mover['email']} {' '.join(changes)}")
        lines += [f"left: {leaver['email']} ({leaver['why']})" for leaver in summary["leavers"]]
        for line in lines[:LISTED]:
            typer.echo(f"    {line}")
        if len(lines) > LISTED:
            typer.echo(f"    … and {len(lines) - LISTED} more (lapse --json directory status lists them)")

    output(cli._call("GET", "/api/directory/sync"), lambda state: _show_sync("directory", state, details))
    if not cli._state["json"]:
        _show_open_references()


@directory_app.command("groups")
def directory_groups(
    source: Annotated[str | None, typer.Option(help="Only this source's groups (file or an integration).")] = None,
    name: Annotated[str | None, typer.Option(help="Only groups of this name, from every source.")] = None,
) -> None:
    """Groups by source, with the reference a policy uses to name each one (and namesakes to beware of)."""

    def show(group: dict[str, Any]) -> None:
        namesakes = f"  ({group['namesakes']} other group(s) of this name)" if group["namesakes"] else ""
        members = count(group["members"], "member")
        typer.echo(f"{group['reference']}  {group['source']}  {group['name']}  {members}{namesakes}")

    params = {key: value for key, value in (("source", source), ("name", name)) if value is not None}
    output(cli._call("GET", "/api/directory/groups", params=params), show)


def _show_sync(name: str, state: dict[str, Any], details: Callable[[dict[str, Any]], None]) -> None:
    """A sync's last run: when it started and finished, why it failed, then its own details."""
    if state["started_at"] is None:
        typer.echo(f"the {name} sync has not run yet")
        return
    finished = f"finished {when(state['finished_at'])}" if state["finished_at"] else "still running"
    typer.echo(f"started {when(state['started_at'])}, {finished}")
    if state.get("error"):
        typer.echo(f"    last run failed: {state['error']}")
    details(state["summary"])


birthright_app = typer.Typer(help="Admins: birthright policies, previews of a change, and their sync.")
cli.app.add_typer(birthright_app, name="birthright")


@birthright_app.command("policies")
def birthright_policies() -> None:
    """The policies in order: which groups get which roles, and how many grants each accounts for."""

    def show(policy: dict[str, Any]) -> None:
        typer.echo(f"{policy['position'] + 1}. {policy['name']}  {count(policy['grants'], 'grant')}")
        typer.echo(f"    groups {', '.join(policy['groups'])} → roles {', '.join(policy['roles'])}")

    output(cli._call("GET", "/api/birthright/policies"), show)


class Change(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REORDER = "reorder"


def _show_plan(plan: dict[str, Any]) -> None:
    for gain in plan["gains"]:
        typer.echo(f"gains {gain['role']} through {gain['policy']}: {gain['user']}")
    for loss in plan["losses"]:
        typer.echo(f"loses {loss['role']}: {loss['user']}")
    for relabel in plan["relabels"]:
        typer.echo(f"keeps {relabel['role']} through {relabel['policy']}: {relabel['user']}")
    if not (plan["gains"] or plan["losses"] or plan["relabels"]):
        typer.echo("nobody gains or loses anything")
    elif plan.get("truncated"):
        counts = plan["counts"]
        typer.echo(f"… in all {counts['add']} gained, {counts['remove']} lost, {counts['relabel']} re-attributed")


@birthright_app.command("preview")
def birthright_preview(
    change: Annotated[Change, typer.Argument(help="What the change would be.")],
    names: Annotated[list[str], typer.Argument(help="The policy's name; for reorder, every policy's, in order.")],
    group: Annotated[list[str] | None, typer.Option(help="create/update: a group reference (repeat).")] = None,
    role: Annotated[list[str] | None, typer.Option(help="create/update: a role path (repeat).")] = None,
    description: Annotated[str | None, typer.Option(help="create/update: the policy's description.")] = None,
    position: Annotated[int | None, typer.Option(help="create: where in the order (0 = first).")] = None,
) -> None:
    """Who would gain and who would lose which role if the change were saved (nothing is changed).

    For example: `lapse --as ada@example.com birthright preview create eng-read --group engineering --role
    ledger/payments-api/read`.
    """
    if change is not Change.REORDER and len(names) != 1:
        cli._fail(f"{change.value} previews one policy: give its name once")
    body: dict[str, Any] = {"action": change.value}
    if change is Change.CREATE:
        policy = {"name": names[0], "groups": group or [], "roles": role or [], "position": position}
        body["policy"] = policy | ({"description": description} if description is not None else {})
    elif change is Change.UPDATE:
        changes = {"groups": group, "roles": role, "description": description}
        body |= {"name": names[0], "changes": {k: v for k, v in changes.items() if v is not None}}
    elif change is Change.DELETE:
        body["name"] = names[0]
    else:
        body["names"] = names
    output(cli._call("POST", "/api/birthright/preview", body), _show_plan)


@birthright_app.command("preview-delete")
def birthright_preview_delete(name: str) -> None:
    """Who would lose which role if the policy were deleted (nothing is changed): `preview delete NAME`."""
    output(cli._call("POST", "/api/birthright/preview", {"action": "delete", "name": name}), _show_plan)


@birthright_app.command("sync")
def birthright_sync() -> None:
    """Run the birthright sync now; `lapse birthright status` shows how it went."""
    output(cli._call("POST", "/api/birthright/sync"), lambda _: typer.echo("birthright sync started"))


@birthright_app.command("status")
def birthright_status() -> None:
    """The birthright sync's last run: when, what it planned and did, or why it failed; then the policies'
    groups and roles that name nothing yet."""

    def details(summary: dict[str, Any]) -> None:
        if "added" in summary:
            typer.echo(
                f"    {summary['added']} granted, {summary['removed']} revoked, {summary['relabelled']} re-attributed, "
                f"{summary['failed']} failed"
            )

    output(cli._call("GET", "/api/birthright/sync"), lambda state: _show_sync("birthright", state, details))
    if not cli._state["json"]:
        _show_open_references()


audit_app = typer.Typer(help="Admins: the audit log and its integrity check.")
cli.app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's MAC chain and that it reaches the head checkpointed outside the app DB.

    Exits 1 and says what is wrong and where (the first broken sequence number) if anything is.
    """
    check = cli._call("GET", "/api/audit/verify")

    def show(check: dict[str, Any]) -> None:
        verdict = "intact" if check["intact"] else f"NOT INTACT from event {check['first_altered']}"
        head = check.get("checkpoint")
        reaches = f", checkpoint at {head['seq']} ({head['file']})" if head else ", no checkpoint"
        typer.echo(f"audit log {verdict}: {count(check['events'], 'event')}, last {check['last_seq']}{reaches}")
        for problem in check["problems"]:
            where = f"event {problem['seq']}" if problem["seq"] is not None else "log"
            typer.echo(f"    {problem['kind']} at {where}: {problem['detail']}")
        for note in check["notes"]:
            typer.echo(f"    note: {note}")

    output(check, show)
    if not check["intact"]:
        raise typer.Exit(1)
