"""Admin: birthright policies (``/admin/birthright``): the policies in order, and the birthright sync's last run;
add, edit or delete a policy, always through a preview of what the change would do (who gains, who loses which
role) before it is saved; run the sync now.

Over the same services as ``/api/birthright`` (``starter.services.birthright``), which check the caller is an
admin themselves. The preview is the service's: the sync's own plan on the changed policies, nothing saved. Its
page carries the previewed change in a form of its own, so what is saved is exactly what was previewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from access.errors import Refusal, RefusalKind
from access.limits import MAX_ITEMS
from starter.api.deps import ClientDep, SettingsDep
from starter.api.problems import STATUS
from starter.services import birthright, birthright_exceptions
from starter.services.birthright import (
    Change,
    CreateChange,
    DeleteChange,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    PreviewOut,
    UpdateChange,
)
from starter.services.fields import Name
from starter.services.syncs import SyncStateOut
from starter.web.rendering import PageAdmin, PageRoute, render, unchanged, version
from store.settings import Settings

router = APIRouter(prefix="/admin/birthright", route_class=PageRoute, include_in_schema=False)

PREVIEW_LIMIT = 200
"""Entries shown per list of a preview (gains, losses, relabels); its counts are always complete."""
LIVE_URL = "/admin/birthright/live"

Action = Literal["create", "update", "delete"]
NameParam = Annotated[Name, Path(description="The policy's name.")]
ListText = Annotated[list[str] | None, Form(max_length=MAX_ITEMS)]
"""A list field: one textarea (one group or role a line), or the preview's hidden fields, one an item."""


@dataclass
class PolicyForm:
    """The policy form as typed: kept when a preview or a save is refused, and carried from a preview to its save."""

    action: Action = "create"
    name: str = ""
    groups: str = ""
    roles: str = ""
    description: str = ""
    position: str = ""


def _listed(text: str) -> list[str]:
    """One group or role a line, blanks dropped (not commas: a group's DN may hold some)."""
    return [item.strip() for item in text.splitlines() if item.strip()]


def _invalid(error: ValidationError) -> Refusal:
    """The first thing wrong, naming the form's field (``groups``, not ``policy.groups.3``)."""
    errors = error.errors()
    location = [str(part) for part in errors[0]["loc"] if not isinstance(part, int)] if errors else []
    where = location[-1] if location else None
    message = (errors[0]["msg"] if errors else "invalid input").removeprefix("Value error, ")
    return Refusal(RefusalKind.INVALID, f"{where}: {message}" if where else message, field=where)


def _position(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        message = "position: a whole number from 1 (first), or blank for last"
        raise Refusal(RefusalKind.INVALID, message, field="position")
    return int(text) - 1


def _change(form: PolicyForm) -> Change:
    """The form as the service's change; a refusal naming the field when it is not one."""
    try:
        if form.action == "delete":
            return DeleteChange(action="delete", name=form.name)
        groups, roles = _listed(form.groups), _listed(form.roles)
        if form.action == "update":
            changes = PolicyUpdate(groups=groups, roles=roles, description=form.description)
            return UpdateChange(action="update", name=form.name, changes=changes)
        policy = PolicyIn(
            name=form.name.strip(),
            groups=groups,
            roles=roles,
            description=form.description,
            position=_position(form.position),
        )
        return CreateChange(action="create", policy=policy)
    except ValidationError as error:
        raise _invalid(error) from None


def _form_page(
    request: Request,
    form: PolicyForm,
    *,
    preview: PreviewOut | None = None,
    error: Refusal | None = None,
    policy: PolicyOut | None = None,
) -> HTMLResponse:
    """The policy form; with ``policy`` (editing it), a note of its exceptions, linked to where they are removed."""
    return render(
        request,
        "admin_birthright_policy.html",
        status=STATUS[error.kind] if error else 200,
        form=form,
        preview=preview,
        error=error,
        exceptions=policy.exceptions if policy else [],
        position=policy.position if policy else None,
    )


# --- the policies and the sync ------------------------------------------------------------------


def _sync_view(settings: Settings, state: SyncStateOut, next_run: datetime | None) -> dict[str, Any]:
    """The sync's last run and next one, as ``fragments/admin_sync_live.html`` shows them."""
    return {
        "state": state,
        "next_run": next_run,
        "every": settings.birthright_sync_every,
        "live_url": LIVE_URL,
        "version": version(state, next_run),
    }


@router.get("", response_class=HTMLResponse)
async def birthright_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    saved: Annotated[Name, Query()] = "",
    deleted: Annotated[Name, Query()] = "",
    synced: bool = False,
    unexcepted: Annotated[str, Query(max_length=1000)] = "",
) -> HTMLResponse:
    notice = None
    if unexcepted:
        notice = f"The exception was removed: {unexcepted} gets the role again from the birthright sync, now."
    elif saved:
        notice = f"Policy {saved} was saved; the birthright sync applies it now."
    elif deleted:
        notice = f"Policy {deleted} was deleted; the birthright sync removes what no other policy accounts for."
    elif synced:
        notice = "The birthright sync was started: its run shows below."
    return render(
        request,
        "admin_birthright.html",
        policies=birthright.list_policies(settings, admin),
        notice=notice,
        **_sync_view(
            settings, birthright.last_sync(settings, admin), await birthright.next_sync(client, settings, admin)
        ),
    )


@router.get("/live", response_model=None)
async def birthright_live(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The sync's last run, or 204 while it is what the page shows (``v``)."""
    state = birthright.last_sync(settings, admin)
    view = _sync_view(settings, state, await birthright.next_sync(client, settings, admin))
    if (same := unchanged(v, str(view["version"]))) is not None:
        return same
    return render(request, "fragments/admin_sync_live.html", **view)


@router.post("/sync")
async def sync_now(admin: PageAdmin, settings: SettingsDep, client: ClientDep) -> RedirectResponse:
    """Run the birthright sync now, as ``POST /api/birthright/sync`` does."""
    await birthright.sync_now(client, settings, admin)
    return RedirectResponse("/admin/birthright?synced=true#sync", status_code=303)


@router.post("/policies/{name}/exceptions/{exception_id}/remove")
async def remove_exception(
    name: NameParam, exception_id: int, admin: PageAdmin, settings: SettingsDep, client: ClientDep
) -> RedirectResponse:
    """Remove an exception an access review made, as ``DELETE /api/birthright/policies/{name}/exceptions/{id}``
    does: the policy grants the role again."""
    policy = birthright.get_policy(settings, admin, name)
    removed = next((e for e in policy.exceptions if e.id == exception_id), None)
    await birthright_exceptions.remove_exception(client, settings, admin, name, exception_id)
    who = f"{removed.user} ({removed.role})" if removed else "the user"
    return RedirectResponse(f"/admin/birthright?{urlencode({'unexcepted': who})}#exceptions", status_code=303)


# --- one policy: edit, preview, save --------------------------------------------------------------


@router.get("/new", response_class=HTMLResponse)
def new_policy(request: Request, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    birthright.list_policies(settings, admin)  # the admin check, before showing the form
    return _form_page(request, PolicyForm())


@router.get("/policies/{name}", response_class=HTMLResponse)
def edit_policy(request: Request, name: NameParam, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    policy = birthright.get_policy(settings, admin, name)
    form = PolicyForm(
        action="update",
        name=policy.name,
        groups="\n".join(policy.groups),
        roles="\n".join(policy.roles),
        description=policy.description,
    )
    return _form_page(request, form, policy=policy)


def _typed(
    action: Action, name: str, groups: list[str] | None, roles: list[str] | None, description: str, position: str
) -> PolicyForm:
    return PolicyForm(action, name, "\n".join(groups or []), "\n".join(roles or []), description, position)


@router.post("/preview", response_class=HTMLResponse)
def preview(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    action: Annotated[Action, Form()],
    name: Annotated[str, Form(max_length=400)] = "",
    groups: ListText = None,
    roles: ListText = None,
    description: Annotated[str, Form(max_length=4000)] = "",
    position: Annotated[str, Form(max_length=12)] = "",
) -> HTMLResponse:
    """What the change would do, from the service's preview (the sync's own plan); nothing is saved."""
    form = _typed(action, name, groups, roles, description, position)
    try:
        shown = birthright.preview(settings, admin, _change(form), limit=PREVIEW_LIMIT)
    except Refusal as refusal:
        if refusal.kind is RefusalKind.FORBIDDEN:
            raise
        return _form_page(request, form, error=refusal)
    return _form_page(request, form, preview=shown)


@router.post("/save", response_class=HTMLResponse)
async def save(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    action: Annotated[Action, Form()],
    name: Annotated[str, Form(max_length=400)] = "",
    groups: ListText = None,
    roles: ListText = None,
    description: Annotated[str, Form(max_length=4000)] = "",
    position: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Save the previewed change, as ``POST``, ``PUT`` or ``DELETE /api/birthright/policies`` do; the sync
    applies it at once."""
    form = _typed(action, name, groups, roles, description, position)
    try:
        change = _change(form)
        if isinstance(change, CreateChange):
            saved = await birthright.create_policy(client, settings, admin, change.policy)
        elif isinstance(change, UpdateChange):
            saved = await birthright.update_policy(client, settings, admin, change.name, change.changes)
        else:
            assert isinstance(change, DeleteChange)
            await birthright.delete_policy(client, settings, admin, change.name)
            return RedirectResponse(f"/admin/birthright?{urlencode({'deleted': change.name})}", status_code=303)
    except Refusal as refusal:
        if refusal.kind is RefusalKind.FORBIDDEN:
            raise
        return _form_page(request, form, error=refusal)
    return RedirectResponse(f"/admin/birthright?{urlencode({'saved': saved.name})}", status_code=303)
