"""What every browser-facing response and request goes through: security headers, and CSRF checks.

``SecurityHeaders`` (outermost) puts a strict Content-Security-Policy (no inline script or style, no framing),
``nosniff`` and a same-origin referrer policy on every response, refusals, static files and 500s included (the
interactive API docs alone may load their CDN's scripts: ``DOCS_CSP``).

``CrossSiteRequests`` refuses a state-changing request (anything but GET, HEAD, OPTIONS) that a browser sends
on another site's behalf: one authenticated by the session cookie must carry the session's CSRF token (the
``X-CSRF-Token`` header htmx sends, or the ``csrf_token`` field every form has), and none may come from
another origin (``Origin``) or another site (``Sec-Fetch-Site: cross-site``). An API token is never sent by a
browser on its own, so a request carrying one needs no CSRF token. It also gives pages their session's
token (``request.state.csrf_token``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.api import problems
from starter.api.deps import lookup_session
from starter.api.routes.codec import ui_origins
from starter.web.rendering import error_page
from store.settings import Settings

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The one exception: FastAPI's interactive API docs load Swagger UI and ReDoc from their CDN and start them with
an inline script. Those pages show nothing but the OpenAPI document (no user content, no session data)."""


class SecurityHeaders:
    """Add ``HEADERS`` to every HTTP response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]
        self.docs = [
            (name, DOCS_CSP.encode() if name == b"content-security-policy" else value) for name, value in self.raw
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.docs if scope.get("path") in DOCS_PATHS else self.raw

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in added if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(origin: str, headers: Headers, settings: Settings) -> bool:
    """Whether a browser's ``Origin`` is Lapse's own: the public URL's, or the host the request was sent to."""
    origin = origin.strip().lower()
    if origin == "null":
        return False
    if origin == _origin(settings.external_url):
        return True
    host = headers.get("host", "").lower()
    return bool(host) and urlsplit(origin).netloc == host


class CrossSiteRequests:
    """Refuse cross-site state changes; require the session's CSRF token when the session cookie is the
    credential. See the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings: Settings = scope["app"].state.settings
        headers = request.headers
        bearer = "authorization" in headers
        session = None if bearer else await run_in_threadpool(lookup_session, request, settings)
        state = scope.setdefault("state", {})
        if session is not None:
            state["csrf_token"] = session.csrf_token
        else:
            state.setdefault("csrf_token", "")
        if request.method in SAFE_METHODS or bearer:
            await self.app(scope, receive, send)
            return
        if self._codec_call(request, settings):
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if headers.get("sec-fetch-site", "").lower() == "cross-site" or (
            origin is not None and not same_origin(origin, headers, settings)
        ):
            await self._refuse(scope, send, "a request from another site cannot change anything in Lapse")
            return
        if session is None:  # the proxy's header, or nobody: the route decides who it is
            await self.app(scope, receive, send)
            return
        sent = headers.get(CSRF_HEADER)
        body: list[Message] = []
        if sent is None and headers.get("content-type", "").split(";")[0].strip().lower() in FORM_TYPES:
            body = await _read_body(receive)
            sent = await _form_token(scope, body)
        if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            await self._refuse(
                scope,
                send,
                f"the CSRF token is missing or wrong: send the page's token as {CSRF_HEADER} or the "
                f"{CSRF_FIELD} form field (reload the page if your session changed)",
            )
            return
        await self.app(scope, _replay(body, receive) if body else receive, send)

    @staticmethod
    def _codec_call(request: Request, settings: Settings) -> bool:
        """The Temporal Web UI decoding payloads (read-only) from one of its configured origins."""
        origin = request.headers.get("origin")
        return request.url.path.startswith("/codec/") and origin is not None and origin in ui_origins(settings)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, detail: str) -> None:
        path: str = scope.get("path", "")
        response: Response
        if path.startswith(("/api/", "/codec/")):
            response = problems.problem_response(403, detail, field=CSRF_HEADER)
        else:  # a page's form: a page saying so
            response = error_page(Request(scope), 403, detail)
        await response(scope, _nothing, send)


async def _read_body(receive: Receive) -> list[Message]:
    """The request's body messages (the body limit outside this middleware bounds them)."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


async def _form_token(scope: Scope, body: Iterable[Message]) -> str | None:
    form_request = Request(scope, _replay(list(body), _nothing))
    try:
        form = await form_request.form()
    except Exception:  # an unreadable form carries no token; the route would refuse it anyway
        return None
    try:
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    finally:
        await form.close()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
