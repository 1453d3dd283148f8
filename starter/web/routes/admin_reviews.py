"""Admin: access reviews (``/admin/reviews``): the definitions and their campaigns; add or change a definition,
always through a preview of what it would hold (items, reviewers, by path) before it is saved; start a campaign;
follow one, close it early, and make its report (a printable page, or CSV), each listing its SHA-256.

Over the same services as ``/api/reviews`` (``starter.services.reviews``, ``review_campaigns``, ``review_report``),
which check the caller is an admin themselves. The preview page carries the previewed definition in a form of its
own, so what is saved is exactly what was previewed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError

from access.durations import format_duration
from access.errors import Refusal, RefusalKind
from access.reviews import ReviewDefinition, ReviewPreview
from starter.api.deps import ClientDep, SettingsDep
from starter.api.problems import STATUS
from starter.services import review_campaigns, review_report, reviews
from starter.services.fields import Name
from starter.web.rendering import PageAdmin, PageRoute, render

router = APIRouter(prefix="/admin/reviews", route_class=PageRoute, include_in_schema=False)

NameParam = Annotated[Name, Path()]
CampaignParam = Annotated[Name, Path()]
Text = Annotated[str, Form(max_length=20_000)]


@dataclass
class DefinitionForm:
    """The definition form as typed: lists one a line, reviewers as ``manager``, ``resource_owner``,
    ``group:NAME`` or ``user:EMAIL``."""

    name: str = ""
    description: str = ""
    integrations: str = ""
    resources: str = ""
    roles: str = ""
    sensitivity: str = ""
    paths: str = ""
    jit_longer_than: str = ""
    group: str = ""
    manager: str = ""
    reviewers: str = "manager"
    fallback: str = ""
    deadline: str = "P14D"
    reminders: str = "P7D, P3D, P1D, PT0S"
    remind_managers: str = ""
    default: str = "keep"
    escalation_deadline: str = "P7D"
    revoke: str = "at_close"
    every: str = ""
    cron: str = ""
    editing: str = ""

    @classmethod
    def of(cls, definition: ReviewDefinition) -> DefinitionForm:
        scope, schedule = definition.scope, definition.schedule
        return cls(
            name=definition.name,
            description=definition.description,
            integrations="\n".join(scope.integrations),
            resources="\n".join(scope.resources),
            roles="\n".join(scope.roles),
            sensitivity="\n".join(s.value for s in scope.sensitivity),
            paths="\n".join(p.value for p in scope.paths),
            jit_longer_than=format_duration(scope.jit_longer_than) if scope.jit_longer_than else "",
            group=scope.group or "",
            manager=scope.manager or "",
            reviewers="\n".join(a.describe() for a in definition.reviewers),
            fallback="\n".join(a.describe() for a in definition.fallback),
            deadline=format_duration(definition.deadline),
            reminders=", ".join(format_duration(r) if r else "PT0S" for r in definition.reminders),
            remind_managers="on" if definition.remind_managers else "",
            default=definition.default.value,
            escalation_deadline=format_duration(definition.escalation_deadline),
            revoke=definition.revoke.value,
            every=format_duration(schedule.every) if schedule and schedule.every else "",
            cron=schedule.cron or "" if schedule else "",
            editing="yes",
        )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _approvers(text: str) -> list[dict[str, Any]]:
    found = []
    for line in (line.strip() for line in text.splitlines() if line.strip()):  # a group's DN may hold commas
        kind, _, name = line.partition(":")
        found.append({"kind": kind.strip(), "name": name.strip() or None})
    return found


def _definition(form: DefinitionForm) -> ReviewDefinition:
    """The form as a definition; a refusal naming the field when it is not one."""
    body: dict[str, Any] = {
        "name": form.name.strip(),
        "description": form.description,
        "scope": {
            "integrations": _lines(form.integrations),
            "resources": _lines(form.resources),
            "roles": _lines(form.roles),
            "sensitivity": _lines(form.sensitivity),
            "paths": _lines(form.paths),
            "jit_longer_than": form.jit_longer_than.strip() or None,
            "group": form.group.strip() or None,
            "manager": form.manager.strip() or None,
        },
        "reviewers": _approvers(form.reviewers),
        "fallback": _approvers(form.fallback),
        "deadline": form.deadline.strip(),
        "reminders": _lines(form.reminders),
        "remind_managers": bool(form.remind_managers),
        "default": form.default,
        "escalation_deadline": form.escalation_deadline.strip(),
        "revoke": form.revoke,
    }
    if form.every.strip() or form.cron.strip():
        body["schedule"] = {"every": form.every.strip() or None, "cron": form.cron.strip() or None}
    try:
        return ReviewDefinition.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or None
        message = first["msg"].removeprefix("Value error, ")
        raise Refusal(RefusalKind.INVALID, f"{where}: {message}" if where else message, field=where) from None


def _form_page(
    request: Request, form: DefinitionForm, *, preview: ReviewPreview | None = None, error: Refusal | None = None,
    previewed: str = "",
) -> HTMLResponse:  # fmt: skip
    return render(
        request,
        "admin_review_definition.html",
        status=STATUS[error.kind] if error else 200,
        form=form,
        preview=preview,
        previewed=previewed,
        error=error,
    )


# --- definitions and campaigns --------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def reviews_page(
    request: Request, admin: PageAdmin, settings: SettingsDep, done: Annotated[str, Query(max_length=400)] = ""
) -> HTMLResponse:
    return render(
        request,
        "admin_reviews.html",
        definitions=reviews.list_definitions(settings, admin),
        campaigns=review_campaigns.list_campaigns(settings, admin),
        notice=done or None,
    )


@router.get("/new", response_class=HTMLResponse)
def new_definition(request: Request, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    reviews.list_definitions(settings, admin)  # the admin check, before showing the form
    return _form_page(request, DefinitionForm(fallback=f"user:{admin.email}"))


@router.get("/definitions/{name}", response_class=HTMLResponse)
def edit_definition(request: Request, name: NameParam, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    return _form_page(request, DefinitionForm.of(reviews.get_definition(settings, admin, name).definition))


def _typed(values: dict[str, str]) -> DefinitionForm:
    return DefinitionForm(**{key: values.get(key, "") for key in asdict(DefinitionForm())})


async def _form(request: Request) -> DefinitionForm:
    form = await request.form()
    return _typed({key: str(value)[:20_000] for key, value in form.items() if isinstance(value, str)})


@router.post("/preview", response_class=HTMLResponse)
async def preview(request: Request, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    """What the definition would hold if started now, from the service's preview; nothing is saved."""
    form = await _form(request)
    try:
        definition = _definition(form)
        shown = reviews.preview_definition(settings, admin, definition)
    except Refusal as refusal:
        if refusal.kind is RefusalKind.FORBIDDEN:
            raise
        return _form_page(request, form, error=refusal)
    return _form_page(request, form, preview=shown, previewed=definition.model_dump_json())


@router.post("/save", response_model=None)
async def save(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    definition: Annotated[str, Form(max_length=60_000)],
    editing: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    """Save the previewed definition, as ``POST`` or ``PUT /api/reviews/definitions`` do."""
    try:
        previewed = ReviewDefinition.model_validate_json(definition)
    except ValidationError:
        raise Refusal(RefusalKind.INVALID, "the previewed definition did not come back whole: preview again") from None
    try:
        if editing:
            saved = await reviews.update_definition(client, settings, admin, previewed.name, previewed)
        else:
            saved = await reviews.create_definition(client, settings, admin, previewed)
    except Refusal as refusal:
        if refusal.kind is RefusalKind.FORBIDDEN:
            raise
        form = DefinitionForm.of(previewed)
        form.editing = editing
        return _form_page(request, form, error=refusal)
    message = f"Review definition {saved.definition.name} was saved." + "".join(f" {n}" for n in saved.notes)
    return RedirectResponse(f"/admin/reviews?{urlencode({'done': message})}", status_code=303)


@router.post("/definitions/{name}/start")
async def start(name: NameParam, admin: PageAdmin, settings: SettingsDep, client: ClientDep) -> RedirectResponse:
    """Start a campaign now, as ``POST /api/reviews/definitions/{name}/start``."""
    started = await reviews.start_campaign(client, settings, admin, name)
    return RedirectResponse(f"/admin/reviews/campaigns/{started.campaign}?started=true", status_code=303)


@router.post("/definitions/{name}/delete")
async def delete(name: NameParam, admin: PageAdmin, settings: SettingsDep, client: ClientDep) -> RedirectResponse:
    notes = await reviews.delete_definition(client, settings, admin, name)
    message = f"Review definition {name} was deleted; its campaigns stay." + "".join(f" {n}" for n in notes)
    return RedirectResponse(f"/admin/reviews?{urlencode({'done': message})}", status_code=303)


# --- one campaign ---------------------------------------------------------------------------------


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(
    request: Request, campaign_id: CampaignParam, admin: PageAdmin, settings: SettingsDep, started: bool = False
) -> HTMLResponse:
    campaign = review_campaigns.get_campaign(settings, admin, campaign_id)
    notice = f"Campaign {campaign_id} was started: its reviewers see their items now." if started else None
    return render(request, "admin_review_campaign.html", campaign=campaign, notice=notice)


@router.post("/campaigns/{campaign_id}/close")
async def close(
    campaign_id: CampaignParam, admin: PageAdmin, settings: SettingsDep, client: ClientDep
) -> RedirectResponse:
    """Close the campaign early, as ``POST /api/reviews/campaigns/{id}/close``."""
    await review_campaigns.close_campaign(client, settings, admin, campaign_id)
    return RedirectResponse(f"/admin/reviews/campaigns/{campaign_id}", status_code=303)


@router.get("/campaigns/{campaign_id}/report", response_class=HTMLResponse)
def report_page(request: Request, campaign_id: CampaignParam, admin: PageAdmin, settings: SettingsDep) -> HTMLResponse:
    """The printable report: the CSV's rows, and its SHA-256."""
    report = review_report.report_page(settings, admin, campaign_id)
    return render(request, "admin_review_report.html", report=report)


@router.get("/campaigns/{campaign_id}/report.csv")
def report_csv(campaign_id: CampaignParam, admin: PageAdmin, settings: SettingsDep) -> StreamingResponse:
    """The report as CSV, as ``GET /api/reviews/campaigns/{id}/report.csv``."""
    pieces = review_report.report_csv(settings, admin, campaign_id)
    return StreamingResponse(
        pieces,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="lapse-review-{campaign_id}.csv"',
            "Cache-Control": "no-store",
        },
    )
