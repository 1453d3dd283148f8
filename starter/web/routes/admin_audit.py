"""Admin: the audit log (``/admin/audit``): events newest first, filtered by actor, target, action and a time
range, paged by keyset; a check of the whole chain, said plainly; the filtered events as a CSV file.

Over the same services as ``/api/audit`` (``starter.services.audit``), which check the caller is an admin
themselves; the CSV is the one ``GET /api/audit.csv`` serves, with its cells neutralised against formulas.
Times in the filter are UTC, as everywhere in the UI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, TypedDict
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from access.errors import Refusal, RefusalKind
from starter.api.deps import ClientDep, SettingsDep
from starter.services import audit
from starter.services.audit import CSV_FILE, AuditCheck, AuditOut
from starter.services.fields import MAX_ID, Email, Name, RolePath, moment_of
from starter.web.rendering import PageAdmin, PageRoute, render

router = APIRouter(prefix="/admin/audit", route_class=PageRoute, include_in_schema=False)

PAGE = 100
"""Events a page shows."""

Moment = Annotated[str, Query(max_length=40)]
"""A time as a ``datetime-local`` field sends it (``2026-12-01T09:30``), UTC; blank: no bound."""


@dataclass(frozen=True)
class AuditFilter:
    """The filter as typed, kept in the page's links (blank: no filter)."""

    actor: str = ""
    target: str = ""
    action: str = ""
    since: str = ""
    until: str = ""

    def query(self, **more: object) -> str:
        kept = {key: value for key, value in {**asdict(self), **more}.items() if value not in ("", None)}
        return urlencode(kept)

    @property
    def any(self) -> bool:
        return any(asdict(self).values())


def _moment(text: str, field: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        message = f"{field}: {text.strip()!r} is not a time (give it as 2026-12-01T09:30, UTC)"
        raise Refusal(RefusalKind.INVALID, message, field=field) from None
    return moment_of(moment, field)  # in UTC; a 422 for a time no database can compare with


class Filters(TypedDict):
    actor: str | None
    target: str | None
    action: str | None
    since: datetime | None
    until: datetime | None


def _filters(typed: AuditFilter) -> Filters:
    """The service's keyword arguments for the typed filter; a refusal naming a field that is not one."""
    return {
        "actor": typed.actor or None,
        "target": typed.target or None,
        "action": typed.action or None,
        "since": _moment(typed.since, "since"),
        "until": _moment(typed.until, "until"),
    }


def _page(
    request: Request, typed: AuditFilter, shown: list[AuditOut], before: int | None, check: AuditCheck | None = None
) -> HTMLResponse:
    """The page of ``shown`` (one more than it shows when there is a next page)."""
    events = shown[:PAGE]
    more = len(shown) > PAGE
    return render(
        request,
        "admin_audit.html",
        events=events,
        typed=typed,
        next_url=f"/admin/audit?{typed.query(before=events[-1].id)}" if more and events else None,
        first_url=f"/admin/audit?{typed.query()}" if before else None,
        csv_url=f"/admin/audit.csv?{typed.query()}",
        check=check,
    )


@router.get("", response_class=HTMLResponse)
def audit_page(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    actor: Annotated[Email, Query()] = "",
    target: Annotated[RolePath, Query()] = "",
    action: Annotated[Name, Query()] = "",
    since: Moment = "",
    until: Moment = "",
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> HTMLResponse:
    typed = AuditFilter(actor, target, action, since, until)
    shown = audit.list_events(settings, admin, limit=PAGE + 1, before=before, **_filters(typed))
    return _page(request, typed, shown, before)


@router.get("/verify", response_class=HTMLResponse)
async def verify(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    client: ClientDep,
    actor: Annotated[Email, Query()] = "",
    target: Annotated[RolePath, Query()] = "",
    action: Annotated[Name, Query()] = "",
    since: Moment = "",
    until: Moment = "",
) -> HTMLResponse:
    """Check the whole chain, as ``GET /api/audit/verify`` does: from htmx the verdict alone, else the page
    (with the same filter) and the verdict on it."""
    check = await audit.verify(client, settings, admin)
    if request.headers.get("HX-Request") == "true":
        return render(request, "fragments/admin_audit_check.html", check=check)
    typed = AuditFilter(actor, target, action, since, until)
    return _page(request, typed, audit.list_events(settings, admin, limit=PAGE + 1, **_filters(typed)), None, check)


@router.get(".csv", response_class=StreamingResponse)
def export(
    admin: PageAdmin,
    settings: SettingsDep,
    actor: Annotated[Email, Query()] = "",
    target: Annotated[RolePath, Query()] = "",
    action: Annotated[Name, Query()] = "",
    since: Moment = "",
    until: Moment = "",
) -> StreamingResponse:
    """Every event the filter selects, as the CSV file ``GET /api/audit.csv`` serves."""
    typed = AuditFilter(actor, target, action, since, until)
    rows = audit.audit_csv(settings, admin, **_filters(typed))
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{CSV_FILE}"', "Cache-Control": "no-store"},
    )
