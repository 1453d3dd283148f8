"""The probes: ``/healthz`` (the process is alive), ``/readyz`` (it can work), ``/metrics`` (Prometheus).

None asks who is calling: orchestrators and Prometheus sign in nowhere. ``/metrics`` is guarded by where the call
comes from instead: with ``LAPSE_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>`` (401 otherwise);
without, only a caller on this machine or in ``LAPSE_METRICS_NETWORKS`` that did not come through a proxy (403
otherwise). Behind a reverse proxy every visitor arrives from the proxy's address: a request carrying forwarding
headers, or from a ``LAPSE_TRUSTED_PROXIES`` address, is nobody's own (``store.health.scraper_allowed``).
"""

from __future__ import annotations

import hmac
import importlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from access.errors import Refusal, RefusalKind
from starter.api.deps import SettingsDep
from store.health import readiness, ready, scraper_allowed
from store.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def health() -> dict[str, str]:
    """The process is alive (no I/O): restart it if this does not answer."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Something the API needs does not answer; the body names it"}},
)
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """The API can serve: Temporal answers, the app DB answers, and its schema is at the latest migration.

    200 ``{"status": "ready", "checks": {...}}``, else 503 ``{"status": "not ready", "checks": {...}}`` with each
    check ``ok`` or what is wrong. Send traffic to a replica only while it answers 200.
    """
    checks = await readiness(request.app.state.client, settings.db_url)
    status = ready(checks)
    body = {"status": "ready" if status else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if status else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"description": "LAPSE_METRICS_TOKEN is set and the request does not carry it"},
        403: {"description": "not from this machine or LAPSE_METRICS_NETWORKS"},
        503: {"description": "this build has no metrics"},
    },
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Lapse's metrics in the Prometheus text format (see the production guide for the names)."""
    check_scraper(request, settings)
    return exposition()


def check_scraper(request: Request, settings: Settings) -> None:
    """Refuse a caller the metrics are not for (see the module's docstring)."""
    if settings.metrics_token is not None:
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        wanted = settings.metrics_token.get_secret_value()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), wanted.encode()):
            raise Refusal(
                RefusalKind.UNAUTHENTICATED,
                "the metrics need Authorization: Bearer with the token in LAPSE_METRICS_TOKEN",
                field="Authorization",
            )
        return
    peer = request.client.host if request.client else None
    if scraper_allowed(settings, peer, request.headers.keys()):
        return
    raise Refusal(
        RefusalKind.FORBIDDEN,
        "the metrics are served to this machine and LAPSE_METRICS_NETWORKS only, not through a proxy "
        "(or with LAPSE_METRICS_TOKEN)",
    )


def exposition() -> Response:
    """The process's metrics, from ``activities.metrics`` (503 in a build without it)."""
    module: Any
    try:
        module = importlib.import_module("activities.metrics")
    except ModuleNotFoundError as error:
        if error.name != "activities.metrics":
            raise
        return Response("metrics not built\n", status_code=503, media_type="text/plain")
    body, content_type = module.exposition()
    return Response(body, media_type=content_type)
