"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error the caller can act on; ``field`` names the part of the request at fault."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.extra = extra


def problem_response(status: int, detail: str, *, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field(location: Any) -> str:
    """``("body", "duration")`` → ``duration``; ``("query", "state")`` → ``state``."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def _discriminator(error: Any) -> str:
    """A body whose kind field (e.g. ``action``) names no known kind: that field is at fault."""
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        return str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
    return ""


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, error: Problem) -> JSONResponse:
        return problem_response(error.status, error.detail, field=error.field, **error.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]) or _discriminator(e), "message": e["msg"]} for e in error.errors()]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem_response(
            422, f"{first['field'] or 'body'}: {first['message']}", field=first["field"] or None, errors=errors
        )

    @app.exception_handler(RPCError)
    async def _temporal(_request: Request, error: RPCError) -> JSONResponse:
        # Nothing was changed: Temporal refused or could not be reached before any state moved.
        return problem_response(503, f"the workflow service is unavailable, try again shortly ({error.message})")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem_response(error.status_code, str(error.detail))
