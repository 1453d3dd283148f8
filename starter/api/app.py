"""The FastAPI application: routers, problem details, and the Temporal client's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from access.settings import Settings, get_settings
from starter.api import problems
from starter.api.routes import approvals, audit, birthright, catalog, directory, grants, integrations, requests
from starter.integrations import ensure_schedules
from starter.syncs import ensure_sync_schedules
from starter.temporal import connect


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> FastAPI:
    """Build the API; tests pass their own settings and an already connected client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.client is None:
            app.state.client = await connect(app.state.settings)
        # Idempotent: every replica may do it; a new integration gets its schedule when created.
        await ensure_schedules(app.state.client, app.state.settings)
        await ensure_sync_schedules(app.state.client, app.state.settings)
        yield

    app = FastAPI(
        title="Lapse",
        summary="Just-in-time access that lapses on its own.",
        description=(
            "Request a role for a while, have it approved by the right people, hold it, and lose it "
            "again when its time is up. The caller is the `X-Forwarded-Email` header set by your SSO "
            "proxy. Errors are RFC 9457 problem details naming the field at fault."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.state.client = client
    problems.install(app)
    for router in (
        catalog.router,
        requests.router,
        approvals.router,
        grants.router,
        integrations.router,
        birthright.router,
        directory.router,
        audit.router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
"""For ``uvicorn starter.api.app:app``."""
