"""``lapse reviews``: access reviews from the command line — a reviewer's items, drafts, submitting, reassigning;
and, for admins, definitions (from a YAML or JSON file), previews, campaigns, closing early, the report, and the
birthright exceptions reviews made (listing and removing them).

Registered on ``starter.cli.app`` when that module is imported; every call goes through ``cli._call``, the one
client (the report's CSV through ``cli._send``, as it is not JSON).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from starter import cli, cli_login
from starter.cli import count, output, when

reviews_app = typer.Typer(
    help="Access reviews: keep or revoke the access you are asked to review; admins define and run campaigns."
)
cli.app.add_typer(reviews_app, name="reviews")


# --- reviewing --------------------------------------------------------------------------------------


def _show_item(item: dict[str, Any]) -> None:
    holder = item["user"] or f"account {item['account']}"
    until = f"until {when(item['expires_at'])}" if item["expires_at"] else "standing"
    typer.echo(f"{item['id']}  {holder}  {item['role']}  {item['path']}  since {when(item['since'])}, {until}")
    inactive = "" if item["active"] else ", NO LONGER ACTIVE"
    manager = f"manager {item['manager']}, " if item["manager"] else ""
    department = f"{item['department']} department, " if item.get("department") else ""
    typer.echo(f"    {item['granted_by']}; {department}{manager}last used {item['last_used_said']}{inactive}")
    if item["path"] == "birthright":
        typer.echo(f"    revoking: {item['revoking_means']}")
    decided = []
    if item["draft"]:
        decided.append(f"draft {item['draft']}" + (f" ({item['draft_comment']})" if item["draft_comment"] else ""))
    if item["decision"]:
        by = "by default" if item["by_default"] else f"by {item['decided_by']}"
        decided.append(f"decided {item['decision']} {by}" + (f" ({item['comment']})" if item["comment"] else ""))
    if item["outcome"]:
        decided.append(f"acted on: {item['outcome']}")
    typer.echo(f"    {'; '.join(decided) or 'undecided'}  (campaign {item['campaign']}, by {when(item['deadline'])})")


@reviews_app.command("items")
def items(
    group: Annotated[str, typer.Option(help="Order by the holder (user) or by role.")] = "user",
    state: Annotated[str, typer.Option(help="todo (default), open, drafted, decided, done or all.")] = "todo",
    campaign: Annotated[str | None, typer.Option(help="Only this campaign's.")] = None,
    holder: Annotated[str | None, typer.Option(help="Only this person's access (email).")] = None,
    role: Annotated[str | None, typer.Option(help="Only this role, or roles under this path.")] = None,
    path: Annotated[str | None, typer.Option(help="Only grants through jit, birthright or external.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the first page).")] = 50,
    after: Annotated[str | None, typer.Option(help="The page after this cursor (printed at a page's end).")] = None,
) -> None:
    """The access you are asked to review in open campaigns (never your own)."""
    params: dict[str, Any] = {"group": group, "state": state, "campaign": campaign, "holder": holder, "role": role}
    params |= {"path": path, "limit": limit, "after": after}
    page = cli._call("GET", "/api/reviews/items", params={k: v for k, v in params.items() if v is not None})
    if cli._state["json"]:
        output(page)
        return
    output(page["items"], _show_item)
    counts = page["counts"]
    typer.echo(
        f"{counts['open']} undecided, {counts['drafted']} drafted (not submitted), {counts['decided']} decided, "
        f"{counts['done']} acted on"
    )
    if page["next_after"]:
        typer.echo(f"more: lapse reviews items --after {page['next_after']}")


def _draft(ids: list[int], decision: str | None, comment: str, submit: bool) -> None:
    drafted = cli._call("POST", "/api/reviews/items/draft", {"items": ids, "decision": decision, "comment": comment})
    if not submit:
        typer.echo(f"{count(drafted['drafted'], 'item')} drafted: `lapse reviews submit` records the decisions")
        return
    _submit(ids)


def _submit(ids: list[int] | None) -> None:
    done = cli._call("POST", "/api/reviews/items/submit", {"items": ids} if ids else {})
    if cli._state["json"]:
        output(done)
        return
    typer.echo(f"{count(done['decided'], 'decision')} recorded ({', '.join(done['campaigns']) or 'no campaign'})")
    for note in done["notes"]:
        typer.echo(f"note: {note}", err=True)


Ids = Annotated[list[int], typer.Argument(help="Item ids (from `lapse reviews items`).")]
Submit = Annotated[bool, typer.Option("--submit", help="Submit at once instead of holding a draft.")]


@reviews_app.command("keep")
def keep(ids: Ids, comment: Annotated[str, typer.Option(help="Why.")] = "", submit: Submit = False) -> None:
    """Keep these items (a draft until you submit)."""
    _draft(ids, "keep", comment, submit)


@reviews_app.command("revoke")
def revoke(
    ids: Ids, comment: Annotated[str, typer.Option(help="Why it should go (required).")], submit: Submit = False
) -> None:
    """Revoke these items (a draft until you submit). A birthright grant becomes an exception on its policy."""
    _draft(ids, "revoke", comment, submit)


@reviews_app.command("clear")
def clear(ids: Ids) -> None:
    """Drop the drafts of these items."""
    _draft(ids, None, "", False)


@reviews_app.command("submit")
def submit(ids: Annotated[list[int] | None, typer.Argument(help="Only these items' drafts.")] = None) -> None:
    """Submit your drafts (all of them, or those of these items): each becomes a decision."""
    _submit(ids)


@reviews_app.command("reviewers")
def reviewers(item: int) -> None:
    """Who you may hand an item to."""
    output(cli._call("GET", f"/api/reviews/items/{item}/reviewers"), typer.echo)


@reviews_app.command("reassign")
def reassign(
    item: int,
    to: Annotated[str, typer.Option("--to", help="An eligible reviewer (`lapse reviews reviewers ITEM`).")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Hand an item to another eligible reviewer."""
    moved = cli._call("POST", f"/api/reviews/items/{item}/reassign", {"to": to, "comment": comment})
    output(moved, lambda m: typer.echo(f"item {m['id']} is now {to}'s to review"))


@reviews_app.command("mine")
def mine() -> None:
    """The open campaigns you have items in, soonest deadline first."""

    def show(c: dict[str, Any]) -> None:
        typer.echo(f"{c['id']}  by {when(c['deadline'])}  {c['open']} undecided, {c['decided']} decided")

    output(cli._call("GET", "/api/reviews/mine"), show)


# --- definitions and campaigns (admins) -------------------------------------------------------------


def _read(path: Path) -> Any:
    try:
        return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
    except OSError as error:
        cli._fail(f"cannot read {path}: {error.strerror or error}")
    except yaml.YAMLError as error:
        cli._fail(f"{path} is not valid YAML or JSON: {error}")


def _show_definition(entry: dict[str, Any]) -> None:
    d = entry["definition"]
    schedule = entry["schedule"] or "one-off"
    reviewers = ", then ".join(a["kind"] + (f":{a['name']}" if a.get("name") else "") for a in d["reviewers"])
    typer.echo(f"{d['name']}  {schedule}  reviewers {reviewers}  deadline {d['deadline']}, default {d['default']}")
    typer.echo(
        f"    {count(entry['campaigns'], 'campaign')}, last {entry['last_campaign'] or 'none'}; {entry['source']}"
    )
    for note in entry.get("notes") or []:
        typer.echo(f"note: {note}", err=True)


def _show_preview(preview: dict[str, Any]) -> None:
    paths = ", ".join(f"{path} {n}" for path, n in preview["by_path"].items())
    typer.echo(
        f"this campaign would hold {count(preview['items'], 'item')}, {count(preview['reviewers'], 'reviewer')}"
        + (f" ({paths})" if paths else "")
        + (f"; {preview['to_fallback']} going to the fallback" if preview["to_fallback"] else "")
    )
    for s in preview["sample"]:
        typer.echo(f"    {s['user_email'] or '(no user)'}  {s['role']}  {s['path']}  → {s['reviewer'] or 'NOBODY'}")


@reviews_app.command("definitions")
def definitions() -> None:
    """The review definitions (admins)."""
    output(cli._call("GET", "/api/reviews/definitions"), _show_definition)


@reviews_app.command("define")
def define(
    file: Annotated[Path, typer.Argument(help="The definition, YAML or JSON (the README's Reviews has one).")],
    update: Annotated[bool, typer.Option("--update", help="Replace the definition of that name.")] = False,
) -> None:
    """Add a review definition, or replace one with --update (admins). Preview it first: `lapse reviews preview`."""
    body = _read(file)
    name = body.get("name") if isinstance(body, dict) else None
    if update:
        output(cli._call("PUT", f"/api/reviews/definitions/{name}", body), _show_definition)
    else:
        output(cli._call("POST", "/api/reviews/definitions", body), _show_definition)


@reviews_app.command("preview")
def preview(target: Annotated[str, typer.Argument(help="A definition file, or a stored definition's name.")]) -> None:
    """What a campaign would hold if started now: items, reviewers, the first few (admins). Nothing is saved."""
    path = Path(target)
    if path.exists():
        output(cli._call("POST", "/api/reviews/preview", _read(path)), _show_preview)
    else:
        output(cli._call("GET", f"/api/reviews/definitions/{target}/preview"), _show_preview)


@reviews_app.command("delete")
def delete(name: str) -> None:
    """Delete a definition and its schedule; its campaigns and reports stay (admins)."""
    output(cli._call("DELETE", f"/api/reviews/definitions/{name}"), lambda d: typer.echo(f"deleted {d['deleted']}"))


@reviews_app.command("start")
def start(name: str) -> None:
    """Start a campaign of the definition now (admins)."""
    output(cli._call("POST", f"/api/reviews/definitions/{name}/start"), lambda s: typer.echo(s["campaign"]))


def _show_campaign(c: dict[str, Any]) -> None:
    states = c["by_state"]
    typer.echo(
        f"{c['id']}  {c['state']}  deadline {when(c['deadline'])}  {count(c['items'], 'item')}: "
        f"{states.get('open', 0)} undecided, {states.get('decided', 0)} decided, {states.get('done', 0)} acted on"
    )
    if c["by_outcome"]:
        typer.echo("    " + ", ".join(f"{outcome} {n}" for outcome, n in c["by_outcome"].items()))
    for p in c.get("progress") or []:
        typer.echo(f"    {p['reviewer']}: {p['open']} undecided, {p['decided']} decided, {p['done']} acted on")


@reviews_app.command("campaigns")
def campaigns(
    definition: Annotated[str | None, typer.Option(help="Only this definition's.")] = None,
    state: Annotated[str | None, typer.Option(help="Only in this state (open, escalated, closed, empty).")] = None,
) -> None:
    """The campaigns, newest first (admins)."""
    params = {k: v for k, v in (("definition", definition), ("state", state)) if v}
    output(cli._call("GET", "/api/reviews/campaigns", params=params), _show_campaign)


@reviews_app.command("campaign")
def campaign(campaign_id: str) -> None:
    """A campaign and each reviewer's progress (admins)."""
    output(cli._call("GET", f"/api/reviews/campaigns/{campaign_id}"), _show_campaign)


@reviews_app.command("close")
def close(campaign_id: str) -> None:
    """Close a campaign now: the default applies to what nobody decided, then the decisions are carried out."""
    output(cli._call("POST", f"/api/reviews/campaigns/{campaign_id}/close"), _show_campaign)


@reviews_app.command("report")
def report(
    campaign_id: str,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write the CSV here (default: stdout).")] = None,
) -> None:
    """The campaign's report as CSV (admins): every item, its decision, who, when, the comment, the proof of each
    revoke. Its last line is the SHA-256 of everything above it (also in the audit log, `review.report`)."""
    call = f"GET /api/reviews/campaigns/{campaign_id}/report.csv"
    response = cli._send("GET", f"/api/reviews/campaigns/{campaign_id}/report.csv", headers=cli_login.identity())
    if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/csv"):
        cli._answer(response, call)  # says what went wrong and ends the command
        cli._fail(f"{cli._state['api']} answered {response.status_code} to {call} without a CSV")
    text = response.text
    body, _, last = text.rstrip("\r\n").rpartition("\r\n")
    digest = hashlib.sha256((body + "\r\n").encode()).hexdigest()
    if digest not in last:  # what came is not what the API made: say so, whatever is written
        cli._fail(f"the report's SHA-256 is {digest}, but its last line says {last!r}: it was changed on the way")
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, newline="")
    typer.echo(f"sha256 {digest} (matches its last line){f': wrote {out}' if out else ''}", err=True)


# --- birthright exceptions (admins) -----------------------------------------------------------------

exceptions_app = typer.Typer()  # its help is the callback's: what it shows with no command
reviews_app.add_typer(exceptions_app, name="exceptions")


def _exceptions(policy: str | None) -> list[dict[str, Any]]:
    """Every exception (or one policy's), each with its ``policy``: the policies' own lists, in policy order."""
    if policy is not None:
        policies = [cli._call("GET", f"/api/birthright/policies/{policy}")]
    else:
        policies = cli._call("GET", "/api/birthright/policies")
    return [{"policy": p["name"], **e} for p in policies for e in p["exceptions"]]


def _show_exception(e: dict[str, Any]) -> None:
    typer.echo(f"{e['id']}  {e['policy']}  {e['user']}  {e['role']}")
    campaign = f"in campaign {e['campaign_id']}" if e["campaign_id"] else "not by a campaign"
    # A review's exception's comment starts by naming its campaign, said just before: the reviewer's words only.
    said = e["comment"].removeprefix(f"access review {e['campaign_id']}").removeprefix(": ")
    comment = f": {said}" if said else ""
    typer.echo(f"    made by {e['created_by']} {when(e['created_at'])}, {campaign}{comment}")


@exceptions_app.callback(invoke_without_command=True)
def exceptions(
    ctx: typer.Context,
    policy: Annotated[str | None, typer.Option(help="Only this birthright policy's.")] = None,
) -> None:
    """The birthright exceptions access reviews made, by policy (admins): each policy no longer grants the role to
    the user; who made it, when, in which campaign, why. `lapse reviews exceptions delete ID` removes one."""
    if ctx.invoked_subcommand is None:
        output(_exceptions(policy), _show_exception)


@exceptions_app.command("delete")
def delete_exception(
    exception_id: Annotated[int, typer.Argument(help="The exception's id (from `lapse reviews exceptions`).")],
    policy: Annotated[str | None, typer.Option(help="Its policy (found from the id when not given).")] = None,
) -> None:
    """Remove an exception (admins): its policy grants the role to the user again, the birthright sync at once."""
    found = next((e for e in _exceptions(policy) if e["id"] == exception_id), None)
    if found is None:
        where = f"birthright policy {policy!r} has no" if policy is not None else "no birthright policy has"
        cli._fail(f"{where} exception {exception_id}: `lapse reviews exceptions` lists them")
    path = f"/api/birthright/policies/{found['policy']}/exceptions/{exception_id}"
    cli._call("DELETE", path, none_on=(204,))
    if cli._state["json"]:
        output({"deleted": exception_id, "policy": found["policy"], "user": found["user"], "role": found["role"]})
        return
    typer.echo(
        f"removed exception {exception_id}: {found['policy']} grants {found['role']} to {found['user']} again "
        "(the birthright sync, started now, grants it)"
    )
