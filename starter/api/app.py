"""The FastAPI application: routers, problem details, and the Temporal client's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from access.limits import MAX_BODY_BYTES
from activities.metrics import register_db_collector
from starter.api import problems
from starter.api.request_log import RequestLog
from starter.api.routes import (
    approvals,
    audit,
    birthright,
    break_glass,
    catalog,
    codec,
    directory,
    grants,
    health,
    integrations,
    notifications,
    org,
    requests,
    reviews,
    slack,
    tokens,
)
from starter.api.security import CrossSiteRequests, SecurityHeaders
from starter.services.discovery import ensure_schedules
from starter.services.reviews import ensure_review_schedules
from starter.services.syncs import ensure_sync_schedules
from starter.web import install as install_web_ui
from starter.web.routes import auth as sign_in
from starter.web.routes import device as device_sign_in
from store.audit_log import configure_audit
from store.logs import configure_logging
from store.settings import Settings, get_settings
from store.temporal import connect


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with a 413 problem before anything parses it.

    A declared ``Content-Length`` over the limit is refused without reading; a body sent without one
    (chunked) is read up to the limit and refused as soon as it goes past it. The route then reads the
    buffered body, so no handler ever holds more than ``limit`` bytes of it.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int = MAX_BODY_BYTES,
        larger: dict[str, int] | None = None,
        exact: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}
        """Path prefixes allowed a larger body, with their limit."""
        self.exact = exact or {}
        """Paths (exactly these) allowed a larger body, with their limit."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.exact.get(path) or next(
            (n for prefix, n in self.larger.items() if path.startswith(prefix)), self.limit
        )
        declared = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(scope, send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > limit:
                await self._refuse(scope, send, 413, self._too_large(int(declared), limit))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            body: bytes = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._refuse(scope, send, 413, self._too_large(None, limit))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the client to go away, as the app expects

        await self.app(scope, replay, send)

    @staticmethod
    def _too_large(size: int | None, limit: int) -> str:
        said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        return f"the request body is {said}; the API reads at most {limit} bytes"

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
        response = problems.problem_response(status, detail, field="body")
        response.headers["Connection"] = "close"
        await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> FastAPI:
    """Build the API; tests pass their own settings and an already connected client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.client is None:
            app.state.client = await connect(app.state.settings)
        # Idempotent: every replica may do it; a new integration gets its schedule when created.
        await ensure_schedules(app.state.client, app.state.settings)
        await ensure_sync_schedules(app.state.client, app.state.settings)
        await ensure_review_schedules(app.state.client, app.state.settings)
        yield

    app = FastAPI(
        title="Lapse",
        summary="Just-in-time access that lapses on its own.",
        description=(
            "Request a role for a while, have it approved by the right people, hold it, and lose it "
            "again when its time is up. Scripts call it with an API token (`Authorization: Bearer …`, "
            "made at `POST /api/tokens`); browsers with their session; behind an SSO proxy (`LAPSE_AUTH=proxy`), "
            "the proxy's `X-Forwarded-Email` header. Errors are RFC 9457 problem details naming the field at fault."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    configure_audit(app.state.settings)  # the audit key and head checkpoint of its app DB
    register_db_collector(app.state.settings.db_url)  # the app DB's gauges on /metrics
    app.state.client = client
    problems.install(app)
    # Inside the body limit (the CSRF check may read a form's bounded body); the headers outside everything.
    app.add_middleware(CrossSiteRequests)
    # The Temporal Web UI's codec calls carry whole payloads (up to the codec's own bound), and an organisation
    # file may list a whole company (POST /api/org, that path only): nothing else needs more.
    app.add_middleware(
        BodyLimit,
        limit=MAX_BODY_BYTES,
        larger={"/codec/": codec.MAX_TOTAL_CHARS + MAX_BODY_BYTES},
        exact={"/api/org": org.MAX_FILE_BYTES},
    )
    build_middleware_stack = app.build_middleware_stack
    # Outside even Starlette's server-error middleware, so that a 500 carries the security headers too; the request
    # log outside them all, so that every answer carries its request id and every line of it is logged with it.
    app.build_middleware_stack = lambda: RequestLog(SecurityHeaders(build_middleware_stack()))  # type: ignore[method-assign]
    openapi = app.openapi

    def documented() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(openapi())
        return app.openapi_schema

    app.openapi = documented  # type: ignore[method-assign]
    for router in (
        catalog.router,
        requests.router,
        approvals.router,
        grants.router,
        integrations.router,
        birthright.router,
        directory.router,
        audit.router,
        codec.router,
        org.router,
        tokens.router,
        reviews.router,
        break_glass.router,
        slack.router,
        notifications.router,
    ):
        # Every operation may answer these (unreadable or oversized body, no caller, not allowed, invalid
        # input, Temporal unreachable); each router and route documents its own others.
        app.include_router(router, responses=problems.responses(400, 401, 403, 413, 422, 503))

    app.include_router(health.router)  # the probes: /healthz, /readyz, /metrics (no sign-in)
    if app.state.settings.auth == "oidc":  # behind an SSO proxy, the proxy signs people in and out
        app.include_router(sign_in.router)
    # The CLI's sign-in through a browser works in every mode: Lapse hosts it, whoever signs people in.
    app.include_router(device_sign_in.router, responses=problems.responses(400, 403, 413, 422))
    app.include_router(device_sign_in.pages)
    install_web_ui(app)  # the web UI's pages over the same services, and /static
    return app


app = create_app()
"""For ``uvicorn starter.api.app:app``."""


def logged_app() -> FastAPI:
    """For ``uvicorn --factory starter.api.app:logged_app`` (``lapse run``): the API, its process logging as the
    settings say (``store.logs``) rather than as uvicorn does."""
    settings = get_settings()
    configure_logging(settings, "api")
    return create_app(settings)
