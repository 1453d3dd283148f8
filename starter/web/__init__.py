"""The web UI: server-rendered pages (Jinja2, htmx, Pico CSS) over the same services as the API.

``install(app)`` adds its pages and serves ``/static``; nothing here runs Node: htmx and Pico are vendored
(``static/VENDORED.md``).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from starter.web.rendering import STATIC_DIR
from starter.web.routes import (
    access,
    admin_audit,
    admin_birthright,
    admin_directory,
    admin_integrations,
    admin_notifications,
    admin_reviews,
    approvals,
    break_glass,
    catalog,
    grants,
    notifications,
    requests,
    reviews,
    tokens,
)

ROUTERS = (
    catalog.router,
    access.router,
    approvals.router,
    reviews.router,
    requests.router,
    break_glass.router,
    grants.router,
    tokens.router,
    notifications.router,
    admin_integrations.router,
    admin_birthright.router,
    admin_directory.router,
    admin_audit.router,
    admin_reviews.router,
    admin_notifications.router,
)


def install(app: FastAPI) -> None:
    """Serve the UI's pages and static files from ``app`` (the API's)."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
