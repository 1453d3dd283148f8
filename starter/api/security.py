"""What every browser-facing response and request goes through: security headers, and CSRF checks.

``SecurityHeaders`` (outermost) puts a strict Content-Security-Policy (no inline script or style, no framing),
``nosniff`` and a same-origin referrer policy on every response, refusals, static files and 500s included (the
interactive API docs alone may load their CDN's scripts: ``DOCS_CSP``), and ``Strict-Transport-Security`` when
Lapse is served over https.

``CrossSiteRequests`` refuses a state-changing request (anything but GET, HEAD, OPTIONS) that a browser sends
on another site's behalf: none may come from another origin (``Origin``) or another site (``Sec-Fetch-Site:
cross-site``), and, since old browsers and privacy tools send neither header, one the browser's own credential
authenticates must also carry a CSRF token (the ``X-CSRF-Token`` header htmx sends, or the ``csrf_token`` field
every form has): the session's, for the session cookie; behind the SSO proxy (``LAPSE_AUTH=proxy``), an HMAC
of the proxied user's email under a key derived from Lapse's secret key (``proxy_csrf_token``) — unless the
request is one no page elsewhere can make without a CORS preflight, which Lapse never grants (``preflighted``:
JSON, say, as the CLI and scripts send). An API token is never sent by a browser on its own, so a request
carrying one needs no CSRF token. It also gives pages the token to send (``request.state.csrf_token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.api import problems
from starter.api.deps import lookup_session, proxied_email
from starter.api.routes.codec import ui_origins
from starter.services.oidc import derived_key
from starter.web.rendering import error_page
from store.settings import Settings

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SIMPLE_TYPES = frozenset({*FORM_TYPES, "text/plain"})
"""The content types a page on another site may send without a CORS preflight (a form's, or a no-cors fetch's)."""
HSTS = ("strict-transport-security", "max-age=31536000")
"""Sent when ``public_url`` is https: browsers then never reach Lapse over plain http for a year."""
PROXY_CSRF_KEY = b"lapse proxy csrf tokens"
SLACK_INTERACTIONS = "/api/slack/interactions"
"""Slack's button clicks: no browser sends them (and no browser credential counts there); Slack's signature over
the body authenticates each one (``starter.services.slack_actions``), so no CSRF token is asked for."""

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
        app = scope.get("app")
        settings: Settings | None = getattr(getattr(app, "state", None), "settings", None)
        if settings is not None and settings.external_url.startswith("https://"):
            added = [*added, (HSTS[0].encode(), HSTS[1].encode())]

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


def proxy_csrf_token(settings: Settings, email: str) -> str:
    """The CSRF token of ``email`` behind the SSO proxy: an HMAC-SHA256 of the address (as the proxy names it,
    case aside) under a key derived from Lapse's secret key, so every replica agrees and no other site can
    compute it."""
    key = derived_key(settings, PROXY_CSRF_KEY)
    digest = hmac.new(key, email.strip().lower().encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def preflighted(request: Request) -> bool:
    """Whether a browser sends this request only after a CORS preflight (which Lapse never grants), so that no
    page on another site can have made it: any method but POST (forms and no-cors fetches send GET and POST
    only), or a POST whose one ``Content-Type`` is not a form's or ``text/plain`` (``application/json``)."""
    if request.method != "POST":
        return True
    sent = request.headers.getlist("content-type")
    if len(sent) != 1:
        return False
    essence = sent[0].split(";", 1)[0].strip(" \t\r\n").lower()
    return bool(essence) and essence not in SIMPLE_TYPES


class CrossSiteRequests:
    """Refuse cross-site state changes; require a CSRF token when the browser's own credential (the session
    cookie, or the proxy's header) authenticates the request. See the module's docstring."""

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
        session = None
        expected: str | None = None  # the CSRF token the browser's own credential calls for
        if not bearer and settings.auth == "proxy":  # the proxy's header, never a session (``deps.identify``)
            email = proxied_email(request, settings)
            if email is not None:
                expected = await run_in_threadpool(proxy_csrf_token, settings, email)
        elif not bearer:
            session = await run_in_threadpool(lookup_session, request, settings)
            expected = session.csrf_token if session is not None else None
        state = scope.setdefault("state", {})
        if expected is not None:
            state["csrf_token"] = expected
        else:
            state.setdefault("csrf_token", "")
        if request.method in SAFE_METHODS or bearer:
            await self.app(scope, receive, send)
            return
        if self._codec_call(request, settings) or request.url.path == SLACK_INTERACTIONS:
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if headers.get("sec-fetch-site", "").lower() == "cross-site" or (
            origin is not None and not same_origin(origin, headers, settings)
        ):
            await self._refuse(scope, send, "a request from another site cannot change anything in Lapse")
            return
        if expected is None:  # nobody the browser's credentials name: the route decides who it is (a 401)
            await self.app(scope, receive, send)
            return
        if session is None and preflighted(request):  # the proxy's header on what no other site can send
            await self.app(scope, receive, send)
            return
        sent = headers.get(CSRF_HEADER)
        body: list[Message] = []
        if sent is None and headers.get("content-type", "").split(";")[0].strip().lower() in FORM_TYPES:
            body = await _read_body(receive)
            sent = await _form_token(scope, body)
        if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            also = "" if session is not None else ", or send JSON (Content-Type: application/json)"
            await self._refuse(
                scope,
                send,
                f"the CSRF token is missing or wrong: send the page's token as {CSRF_HEADER} or the "
                f"{CSRF_FIELD} form field{also} (reload the page if your session changed)",
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
