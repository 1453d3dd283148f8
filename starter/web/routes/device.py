"""Signing the CLI in through a browser (``starter.services.device``, RFC 8628): the CLI's two calls and the page.

For ``lapse login``, with no sign-in (the CLI has nothing yet): ``POST /auth/device`` ``{"client_name"}`` starts
one and answers the codes; ``POST /auth/device/token`` (``device_code``, as a form or JSON) answers RFC 8628's
errors until it is approved, then a new API token, once. Both are served in every sign-in mode, so behind an
SSO proxy these two paths must be let through without its sign-in.

For the person, signed in: ``GET /device?user_code=…`` shows what is asked (a form to type the code when the
URL has none; an anonymous browser goes through sign-in first and comes back with its code), and
``POST /device`` approves or denies it — from a browser's session or the proxy's header only, never with an API
token (``starter/api/scopes.py``): a token must not sign in another one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import NoMatchFound

from access.errors import Refusal
from starter.api.deps import SettingsDep
from starter.api.problems import STATUS, Problem, responses
from starter.services import device
from starter.services.device import DeviceAuthorization, DeviceStart, DeviceTokenError
from starter.web.rendering import PageRoute, PageUser, render
from starter.web.routes.tokens import SCOPES
from store.settings import Settings

router = APIRouter(prefix="/auth/device", tags=["sign-in"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""A token response, and its errors, are never cached (RFC 6749, 5.1)."""
MAX_CODE = 64


@router.post(
    "",
    summary="Start signing the CLI in (RFC 8628 device authorization)",
    responses=responses(429),
)
def start_device_sign_in(request: Request, body: DeviceStart, settings: SettingsDep) -> DeviceAuthorization:
    """A new sign-in for the CLI on `client_name`: show the person `user_code` and `verification_uri` (or
    `verification_uri_complete`), then poll `POST /auth/device/token` every `interval` seconds. Needs no sign-in;
    a 429 when one address starts too many."""
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    address = request.client.host if request.client else "unknown"
    try:
        return device.start(settings, body, address=address, verification_uri=f"{base}/device")
    except device.TooManySignIns as too_many:
        raise Problem(429, too_many.message, retry_after=too_many.retry_after) from None


def _token_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400, headers=NO_STORE)


async def _fields(request: Request) -> dict[str, Any]:
    """The body's fields: a form (as RFC 8628 sends them) or a JSON object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(await request.body())
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        async with request.form() as form:
            return {key: value for key, value in form.items() if isinstance(value, str)}
    return {}


# Not in the OpenAPI document, which promises a problem document for every 4xx: this one speaks OAuth (RFC 6749's
# error JSON), as RFC 8628 says, for any device-flow client.
@router.post("/token", include_in_schema=False)
async def collect_device_token(request: Request, settings: SettingsDep) -> Response:
    """`device_code` (a form, or JSON; `grant_type`, if sent, must be RFC 8628's): once the person approved, a
    new API token of theirs (`access_token`), once only; until then an RFC 8628 error, as JSON with a 400."""
    fields = await _fields(request)
    grant_type = fields.get("grant_type")
    if grant_type is not None and grant_type != device.DEVICE_GRANT_TYPE:
        return _token_error("unsupported_grant_type", f"grant_type must be {device.DEVICE_GRANT_TYPE}")
    code = fields.get("device_code")
    if not isinstance(code, str) or not code or len(code) > MAX_CODE:
        return _token_error("invalid_request", "send the device_code POST /auth/device answered")
    try:
        token = await run_in_threadpool(device.exchange, settings, code)
    except DeviceTokenError as error:
        return _token_error(error.error, error.description)
    return JSONResponse(token.model_dump(), headers=NO_STORE)


# --- the page ------------------------------------------------------------------------------------


class SignInFirst(PageRoute):
    """A page an anonymous browser is sent to sign in for (where Lapse signs people in itself), coming back to
    it afterwards with its query, so that the code in the link survives the trip; anyone else gets the 401."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        page = super().get_route_handler()

        async def signed_in_first(request: Request) -> Response:
            response = await page(request)
            browsing = request.method == "GET" and "text/html" in request.headers.get("accept", "")
            if response.status_code != 401 or not browsing or "authorization" in request.headers:
                return response
            try:
                login = request.app.url_path_for("login")
            except NoMatchFound:  # behind the SSO proxy, which signs people in before they get here
                return response
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{login}?{urlencode({'next': back})}", status_code=303)

        return signed_in_first


pages = APIRouter(route_class=SignInFirst, include_in_schema=False)

UserCode = Annotated[str | None, Query(max_length=MAX_CODE)]


def _page(
    request: Request,
    settings: Settings,
    *,
    sign_in: device.DeviceRequest | None = None,
    refusal: Refusal | None = None,
    typed: str = "",
) -> HTMLResponse:
    return render(
        request,
        "device.html",
        status=STATUS[refusal.kind] if refusal else 200,
        sign_in=sign_in,
        error=refusal.message if refusal else None,
        typed=typed,
        scopes=SCOPES,
        token_days=max(1, settings.token_default_lifetime.days),
    )


@pages.get("/device", response_class=HTMLResponse)
def device_page(request: Request, user: PageUser, settings: SettingsDep, user_code: UserCode = None) -> HTMLResponse:
    """The sign-in with ``user_code``, to approve or deny; without one, a form to type it."""
    if not user_code:
        return _page(request, settings)
    try:
        sign_in = device.look_up(settings, user, user_code)
    except Refusal as refusal:
        return _page(request, settings, refusal=refusal, typed=user_code)
    return _page(request, settings, sign_in=sign_in)


@pages.post("/device", response_class=HTMLResponse)
def decide_device_sign_in(
    request: Request,
    user: PageUser,
    settings: SettingsDep,
    user_code: Annotated[str, Form(max_length=MAX_CODE)],
    decision: Annotated[Literal["approve", "deny"], Form()],
) -> HTMLResponse:
    """Approve (the CLI then collects a token of the signed-in person's) or deny the sign-in with ``user_code``."""
    try:
        decided = device.decide(settings, user, user_code, approve=decision == "approve")
    except Refusal as refusal:
        return _page(request, settings, refusal=refusal, typed=user_code)
    return _page(request, settings, sign_in=decided)
