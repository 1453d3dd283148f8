"""API tokens (``/tokens``): make one (shown once), list mine with their last use, revoke; for admins, service
accounts: make one, give it a token (shown once), deactivate it.

Over the same services as ``/api/tokens`` and ``/api/service-accounts`` (``starter.services.tokens``), with the
same identity. A token is never made by a token: these forms need a browser session (or the proxy's header),
as ``POST /api/tokens`` does (``starter/api/scopes.py``). A new token is shown in the answer to the form's post
(never cached, never in a URL), and never again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from access.errors import Refusal, RefusalKind
from starter.api.deps import CallerIdentity, SettingsDep
from starter.api.problems import STATUS
from starter.services import tokens
from starter.services.fields import Email, FreeText, Name
from starter.services.notifications import my_notifications
from starter.services.tokens import Scope, ServiceAccountCreate, TokenCreate, TokenCreated
from starter.web.rendering import PageAdmin, PageRoute, PageUser, render
from store.settings import Settings
from store.tables import User

router = APIRouter(route_class=PageRoute, include_in_schema=False)

SCOPES: dict[Scope, str] = {
    Scope.READ: "see the catalog, your requests, grants and approvals",
    Scope.REQUEST: "request access; extend, give back or withdraw your own",
    Scope.APPROVE: "approve and deny what you are an eligible approver for",
    Scope.ADMIN: "use your admin rights (an admin's tokens only)",
}
"""What each scope lets a token do, as the form says it (``starter/api/scopes.py`` decides)."""
DEFAULT_SCOPES = (Scope.READ.value,)

TokenId = Annotated[Name, Path(description="The token's id, as listed (not the token).")]
AccountEmail = Annotated[Email, Path(description="The service account's email.")]
TokenName = Annotated[str, Form(max_length=400)]
Scopes = Annotated[list[str] | None, Form(max_length=2 * len(Scope))]
Days = Annotated[str, Form(alias="expires_days", max_length=12)]


@dataclass(frozen=True)
class FormError:
    """Why a form was refused, shown beside it: ``where`` is the form (``mine``, ``account``, ``mint:<email>``)."""

    where: str
    message: str
    field: str | None = None


@dataclass
class TokenForm:
    """What a token form shows: what was typed (kept when it is refused), or the defaults."""

    name: str = ""
    scopes: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))
    days: str = ""


def _days(lifetime: timedelta) -> int:
    return max(1, lifetime // timedelta(days=1))


def _page(
    request: Request,
    user: User,
    settings: Settings,
    *,
    status: int = 200,
    created: TokenCreated | None = None,
    error: FormError | None = None,
    forms: dict[str, TokenForm] | None = None,
    account_form: dict[str, Any] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """The page: my tokens, and (admins) the service accounts with theirs; ``created``: the new token, once."""
    accounts = tokens.list_service_accounts(settings, user) if user.is_admin else None
    default_days = str(_days(settings.token_default_lifetime))
    return render(
        request,
        "tokens.html",
        status=status,
        mine=tokens.list_tokens(settings, user),
        accounts=accounts,
        created=created,
        error=error,
        forms=forms or {},
        blank=TokenForm(days=default_days),
        account_form=account_form or {"email": "", "name": "", "admin": False},
        scopes=SCOPES,
        default_days=default_days,
        max_days=_days(settings.token_max_lifetime),
        api_url=settings.external_url,
        notice=notice,
        notify=my_notifications(settings, user),
    )


def _invalid(error: ValidationError) -> Refusal:
    errors = error.errors()
    location = errors[0]["loc"] if errors else ()
    where = str(location[0]) if location else None
    message = (errors[0]["msg"] if errors else "invalid input").removeprefix("Value error, ")
    return Refusal(RefusalKind.INVALID, f"{where}: {message}" if where else message, field=where)


def _token_body(settings: Settings, name: str, scopes: list[str], days: str) -> TokenCreate:
    """The form as the API's body; a refusal naming the field when it is not one."""
    if not name.strip():
        raise Refusal(RefusalKind.INVALID, "name: give it a name, to recognise it in the list", field="name")
    if not scopes:
        raise Refusal(RefusalKind.INVALID, "choose at least one scope", field="scopes")
    most = _days(settings.token_max_lifetime)
    expires_in: timedelta | None = None
    if days := days.strip():
        if not (days.isascii() and days.isdigit()) or not 1 <= int(days) <= most:
            raise Refusal(
                RefusalKind.INVALID,
                f"expires in: a whole number of days from 1 to {most} (LAPSE_TOKEN_MAX_LIFETIME)",
                field="expires_days",
            )
        expires_in = timedelta(days=int(days))
    try:
        return TokenCreate.model_validate({"name": name.strip(), "scopes": scopes, "expires_in": expires_in})
    except ValidationError as error:
        raise _invalid(error) from None


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    revoked: Annotated[Name | None, Query()] = None,
    account: Annotated[Email | None, Query()] = None,
    deactivated: Annotated[Email | None, Query()] = None,
    notifications: Annotated[Literal["saved"] | None, Query()] = None,
) -> HTMLResponse:
    notice = None
    if notifications:
        notice = "Your notification channels were saved."
    elif revoked:
        notice = f"Token {revoked} was revoked: a call made with it is refused from now on."
    elif account:
        notice = f"Service account {account} was created: give it a token below."
    elif deactivated:
        notice = f"Service account {deactivated} was deactivated, and its tokens revoked."
    return _page(request, user, settings, notice=notice)


@router.post("/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    name: TokenName = "",
    scopes: Scopes = None,
    days: Days = "",
) -> HTMLResponse:
    """A new token acting as me, shown in this answer only; refused, the form comes back with the reason."""
    try:
        created = tokens.create_token(settings, user, _token_body(settings, name, scopes or [], days))
    except Refusal as refusal:
        return _page(
            request,
            user,
            settings,
            status=STATUS[refusal.kind],
            error=FormError("mine", refusal.message, refusal.field),
            forms={"mine": TokenForm(name, scopes or [], days)},
        )
    return _page(request, user, settings, created=created)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: TokenId, user: PageUser, identity: CallerIdentity, settings: SettingsDep) -> Response:
    """Revoke one of mine (admins: anyone's, a service account's) at once."""
    tokens.revoke_token(settings, user, token_id, with_token=identity.token_id)
    return RedirectResponse(f"/tokens?{urlencode({'revoked': token_id})}", status_code=303)


# --- service accounts (admins) ---------------------------------------------------------------


@router.post("/admin/service-accounts", response_class=HTMLResponse)
def create_service_account(
    request: Request,
    admin: PageAdmin,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=400)] = "",
    name: Annotated[FreeText, Form()] = "",
    is_admin: Annotated[bool, Form(alias="admin")] = False,
) -> Response:
    typed = {"email": email, "name": name, "admin": is_admin}
    try:
        try:
            body = ServiceAccountCreate.model_validate(typed)
        except ValidationError as error:
            raise _invalid(error) from None
        made = tokens.create_service_account(settings, admin, body)
    except Refusal as refusal:
        return _page(
            request,
            admin,
            settings,
            status=STATUS[refusal.kind],
            error=FormError("account", refusal.message, refusal.field),
            account_form=typed,
        )
    return RedirectResponse(f"/tokens?{urlencode({'account': made.email})}#service-accounts", status_code=303)


@router.post("/admin/service-accounts/{email}/tokens", response_class=HTMLResponse)
def create_service_token(
    request: Request,
    email: AccountEmail,
    admin: PageAdmin,
    settings: SettingsDep,
    name: TokenName = "",
    scopes: Scopes = None,
    days: Days = "",
) -> HTMLResponse:
    """A new token for a service account, shown in this answer only."""
    try:
        created = tokens.create_service_token(settings, admin, email, _token_body(settings, name, scopes or [], days))
    except Refusal as refusal:
        if refusal.kind is RefusalKind.NOT_FOUND:
            raise
        where = f"mint:{email.strip().lower()}"
        return _page(
            request,
            admin,
            settings,
            status=STATUS[refusal.kind],
            error=FormError(where, refusal.message, refusal.field),
            forms={where: TokenForm(name, scopes or [], days)},
        )
    return _page(request, admin, settings, created=created)


@router.post("/admin/service-accounts/{email}/deactivate")
def deactivate_service_account(email: AccountEmail, admin: PageAdmin, settings: SettingsDep) -> Response:
    """Deactivate a service account: its tokens are revoked and stop at once."""
    done = tokens.deactivate_service_account(settings, admin, email)
    return RedirectResponse(f"/tokens?{urlencode({'deactivated': done.email})}#service-accounts", status_code=303)
