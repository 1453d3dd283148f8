"""Signing the CLI in through a browser (``starter.services.device``, RFC 8628): the CLI's two calls and the page.

For ``lapse login``, with no sign-in (the CLI has nothing yet): ``POST /auth/device`` ``{"client_name"}`` starts
one and answers the codes; ``POST /auth/device/token`` (``device_code``, as a form or JSON) answers RFC 8628's
errors until it is approved, then a new API token, once. Both are served in every sign-in mode, so behind an
SSO proxy these two paths must be let through without its sign-in.

For the person, signed in: ``GET /device`` is a form to type the code their terminal shows (an anonymous browser
goes through sign-in first and comes back). A code in its URL (``verification_uri_complete``) is a hint only:
nothing is looked up by it and it is not shown, since the link may be someone else's (RFC 8628, 5.4); a typed
code that differs from it is refused, saying so. ``POST /device`` with the typed code shows what is asked, and
with a ``decision`` approves or denies it — from a browser's session or the proxy's header only, never with an
API token (``starter/api/scopes.py``): a token must not sign in another one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import NoMatchFound

from access.errors import Refusal
from starter.api.deps import CallerSignIn, SettingsDep
from starter.api.problems import STATUS, Problem, responses
from starter.services import device, device_limits
from starter.services.device import DeviceAuthorization, DeviceStart, DeviceTokenError
from starter.services.tokens import Scope
from starter.web.rendering import PageRoute, PageUser, render, sign_in_again
from starter.web.routes.tokens import SCOPES
from store.settings import Settings

router = APIRouter(prefix="/auth/device", tags=["sign-in"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""A token response, and its errors, are never cached (RFC 6749, 5.1)."""
MAX_CODE = 64
MAX_TOKEN_BODY = 4096
"""A token request is a device code (43 characters) and a grant type: a body far longer is no token request."""


@router.post(
    "",
    summary="Start signing the CLI in (RFC 8628 device authorization)",
    responses=responses(429),
)
def start_device_sign_in(request: Request, body: DeviceStart, settings: SettingsDep) -> DeviceAuthorization:
    """A new sign-in for the CLI on `client_name`: show the person `user_code` and `verification_uri` (the page
    asks them to type the code; `verification_uri_complete` is only a hint to it), then poll
    `POST /auth/device/token` every `interval` seconds. Needs no sign-in; a 429 when one address (an IPv6 /64)
    starts or keeps waiting too many, or too many wait in all."""
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    address = request.client.host if request.client else "unknown"
    try:
        return device.start(settings, body, address=address, verification_uri=f"{base}/device")
    except device_limits.TooManySignIns as too_many:
        raise Problem(429, too_many.message, retry_after=too_many.retry_after) from None


def _token_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400, headers=NO_STORE)


class Undecodable(Exception):
    """A token request's body that is too long or not the form or JSON object it says it is."""


async def _body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TOKEN_BODY:
            raise Undecodable(f"the body is longer than {MAX_TOKEN_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _fields(request: Request) -> dict[str, Any]:
    """The body's fields: a form (as RFC 8628 sends them) or a JSON object; ``Undecodable`` for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _body(request)
    try:
        if kind == "application/json":
            data = json.loads(body)
        elif kind == "application/x-www-form-urlencoded":
            data = dict(parse_qsl(body.decode(), max_num_fields=10))
        else:
            raise Undecodable("send the fields as application/x-www-form-urlencoded (RFC 6749) or JSON")
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        raise Undecodable(f"the body is not the {kind} it says it is") from None
    if not isinstance(data, dict):
        raise Undecodable("the body is not a JSON object")
    return data


# Not in the OpenAPI document, which promises a problem document for every 4xx: this one speaks OAuth (RFC 6749's
# error JSON), as RFC 8628 says, for any device-flow client.
@router.post("/token", include_in_schema=False)
async def collect_device_token(request: Request, settings: SettingsDep) -> Response:
    """`device_code` (a form, or JSON; `grant_type`, if sent, must be RFC 8628's): once the person approved, a
    new API token of theirs (`access_token`), once only; until then an RFC 8628 error, as JSON with a 400."""
    try:
        fields = await _fields(request)
    except Undecodable as undecodable:
        return _token_error("invalid_request", str(undecodable))
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
    link_code: str = "",
) -> HTMLResponse:
    browser = request.client.host if request.client else "unknown"
    network = device_limits.network_of
    response = render(
        request,
        "device.html",
        status=429 if isinstance(refusal, device_limits.TooMany) else STATUS[refusal.kind] if refusal else 200,
        sign_in=sign_in,
        error=refusal.message if refusal else None,
        typed=typed,
        link_code=link_code,
        elsewhere=sign_in is not None and network(sign_in.address) != network(browser),
        browser_address=browser,
        scopes=SCOPES,
        admin_scope=Scope.ADMIN,
        token_days=max(1, settings.device_token_lifetime.days),
    )
    if refusal is not None and refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


@pages.get("/device", response_class=HTMLResponse)
def device_page(request: Request, user: PageUser, settings: SettingsDep, user_code: UserCode = None) -> HTMLResponse:
    """A form to type the code the terminal shows; a code in the URL is kept as a hint to check the typed one
    against, never looked up nor shown."""
    hint = device.user_code_of(user_code or "") or ""
    return _page(request, settings, link_code=hint)


@pages.post("/device", response_class=HTMLResponse)
def decide_device_sign_in(
    request: Request,
    user: PageUser,
    sign_in: CallerSignIn,
    settings: SettingsDep,
    user_code: Annotated[str, Form(max_length=MAX_CODE)],
    decision: Annotated[Literal["approve", "deny"] | None, Form()] = None,
    admin: Annotated[bool, Form()] = False,
    link_code: Annotated[str, Form(max_length=MAX_CODE)] = "",
) -> Response:
    """Without a ``decision``: the sign-in with the typed ``user_code``, to approve or deny. With one: approve it
    (the CLI then collects a token of the signed-in person's; ``admin`` rights only if ticked) or deny it."""
    try:
        if decision is None:
            shown = device.look_up(settings, user, user_code, link_code=link_code or None)
        else:
            shown = device.decide(
                settings, user, user_code, approve=decision == "approve", admin=admin, sign_in=sign_in
            )
    except Refusal as refusal:
        if (again := sign_in_again(request, refusal)) is not None:
            return again
        return _page(request, settings, refusal=refusal, typed=user_code)
    return _page(request, settings, sign_in=shown)
