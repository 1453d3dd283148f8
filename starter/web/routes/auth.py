"""Sign-in and sign-out through the OIDC provider (``/auth/*``), over ``starter.services.oidc`` and the sessions.

``GET /auth/login?next=/path[&max_age=600]`` sends the browser to the provider, keeping the pending sign-in
sealed in a short-lived cookie of its own; ``GET /auth/callback`` finishes it, starts a new session and goes on
to ``next`` (Lapse's own paths only); ``POST /auth/logout`` ends the session (CSRF-checked by the middleware)
and signs out at the provider too where it offers RP-initiated logout. A refusal is a page saying why.
"""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from access.errors import Refusal
from starter.api.deps import SettingsDep
from starter.api.problems import STATUS
from starter.services import oidc
from starter.services.sessions import (
    COOKIE_NAME,
    StartedSession,
    clear_session_cookie,
    end_session,
    set_session_cookie,
    start_session,
)
from starter.web.rendering import PageRoute, render
from store.settings import Settings

router = APIRouter(prefix="/auth", route_class=PageRoute, include_in_schema=False)

PENDING_COOKIE = "lapse_sign_in"
"""The sign-ins under way in this browser, sealed (``oidc.seal_pending``); sent to ``/auth/*`` only."""
ID_TOKEN_COOKIE = "lapse_id_token"
"""The last ID token, sealed: the provider's logout takes it as a hint. Sent to ``/auth/logout`` only."""
MAX_ID_TOKEN_COOKIE = 3800
"""Beyond this a browser may drop the cookie: sign-out then goes without the hint."""
MAX_AGE_SECONDS = 30 * 24 * 3600

NextPath = Annotated[str, Query(alias="next", max_length=oidc.MAX_NEXT)]
Param = Annotated[str | None, Query(max_length=4096)]


def _set_cookie(response: Response, settings: Settings, name: str, value: str, *, path: str, max_age: int) -> None:
    secure = oidc.secure_cookies(settings)
    response.set_cookie(name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="lax")


def _delete_cookie(response: Response, settings: Settings, name: str, *, path: str) -> None:
    response.delete_cookie(name, path=path, secure=oidc.secure_cookies(settings), httponly=True, samesite="lax")


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _keep_pending(response: Response, settings: Settings, pending: list[oidc.PendingSignIn]) -> None:
    if pending:
        sealed = oidc.seal_pending(settings, pending)
        _set_cookie(response, settings, PENDING_COOKIE, sealed, path="/auth", max_age=oidc.PENDING_SECONDS)
    else:
        _delete_cookie(response, settings, PENDING_COOKIE, path="/auth")


def _login_url(next_path: str) -> str:
    return "/auth/login?" + urlencode({"next": next_path}) if next_path != "/" else "/auth/login"


def _refused_page(request: Request, refusal: Refusal) -> HTMLResponse:
    """Why the sign-in did not happen, with a way to start again; the status the API would give."""
    not_a_user = isinstance(refusal, oidc.NotALapseUser)
    next_path = refusal.next_path if isinstance(refusal, oidc.SignInFailed) else "/"
    title = "You are not a Lapse user" if not_a_user else "Sign-in failed"
    if STATUS[refusal.kind] == 503:
        title = "Sign-in is unavailable"
    response = render(
        request,
        "sign_in_refused.html",
        status=STATUS[refusal.kind],
        title=title,
        message=refusal.message,
        not_a_user=not_a_user,
        retry_url=_login_url(next_path),
    )
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


@router.get("/login", name="login")
async def login(
    request: Request,
    settings: SettingsDep,
    next_path: NextPath = "/",
    max_age: Annotated[int | None, Query(ge=0, le=MAX_AGE_SECONDS)] = None,
) -> Response:
    """Send the browser to the identity provider; it comes back to ``/auth/callback``, then to ``next``.
    ``max_age``: have the person authenticate again there if their last time is older (seconds)."""
    try:
        start = await oidc.begin_sign_in(settings, next_path=next_path, max_age=max_age)
    except Refusal as refusal:
        return _refused_page(request, refusal)
    earlier = oidc.open_pending(settings, request.cookies.get(PENDING_COOKIE))
    response = RedirectResponse(start.url, status_code=303)
    _keep_pending(response, settings, [start.pending, *earlier])
    return _no_store(response)


def _restart_session(settings: Settings, old: str | None, signed_in: oidc.SignedIn) -> StartedSession:
    """A new session for who signed in (a new id every time: no fixation); the browser's old one ends."""
    if old:
        end_session(settings, old)
    return start_session(settings, signed_in.user.email, auth_time=signed_in.auth_time)


@router.get("/callback", name="auth_callback")
async def callback(
    request: Request,
    settings: SettingsDep,
    state: Param = None,
    code: Param = None,
    error: Param = None,
    error_description: Param = None,
) -> Response:
    """Where the identity provider sends the browser back: finish the sign-in it started here."""
    pending = oidc.open_pending(settings, request.cookies.get(PENDING_COOKIE))
    response: Response
    try:
        if error and not any(p.state == state for p in pending):  # providers are to send the state back; not all do
            raise oidc.provider_error(None, error, error_description)
        this, pending = oidc.take_pending(pending, state)
        if error:
            raise oidc.provider_error(this, error, error_description)
        signed_in = await oidc.finish_sign_in(settings, this, code=code)
        started = await asyncio.to_thread(_restart_session, settings, request.cookies.get(COOKIE_NAME), signed_in)
    except Refusal as refusal:
        response = _refused_page(request, refusal)
    else:
        response = RedirectResponse(this.next, status_code=303)
        set_session_cookie(response, settings, started)
        sealed = oidc.seal_id_token(settings, signed_in.id_token)
        if len(sealed) <= MAX_ID_TOKEN_COOKIE:
            lifetime = int(settings.session_max.total_seconds())
            _set_cookie(response, settings, ID_TOKEN_COOKIE, sealed, path="/auth/logout", max_age=lifetime)
    _keep_pending(response, settings, pending)
    return _no_store(response)


@router.post("/logout", name="logout")
async def logout(request: Request, settings: SettingsDep) -> Response:
    """End this browser's session in Lapse, then at the provider (RP-initiated logout) where it offers that.

    To the provider the browser goes from a page, not by redirecting this form's post: the pages' policy lets
    forms send only to Lapse (``form-action 'self'``), which browsers apply to a form's redirects too."""
    session_id = request.cookies.get(COOKIE_NAME)
    if session_id:
        await asyncio.to_thread(end_session, settings, session_id)
    hint = oidc.open_id_token(settings, request.cookies.get(ID_TOKEN_COOKIE))
    provider_url = await oidc.sign_out_url(settings, id_token_hint=hint)
    response: Response
    if provider_url is None:
        response = RedirectResponse(oidc.SIGNED_OUT_PATH, status_code=303)
    else:
        response = render(request, "signing_out.html", provider_url=provider_url)
        response.headers["Refresh"] = f"0; url={provider_url}"
    clear_session_cookie(response, settings)
    _delete_cookie(response, settings, ID_TOKEN_COOKIE, path="/auth/logout")
    return _no_store(response)


@router.get("/signed-out", name="signed_out", response_class=HTMLResponse)
def signed_out(request: Request) -> HTMLResponse:
    """Where sign-out ends (the provider sends the browser back here)."""
    return render(request, "signed_out.html")
