"""RFC 9457 problem details for every error the API returns.

The one place a refusal becomes an HTTP status: a service's ``Refusal`` and a workflow's refused update
(an ``ApplicationError`` whose type is a ``RefusalKind`` value) are both answered by their kind.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from access.errors import Refusal, RefusalKind

PROBLEM_JSON = "application/problem+json"
MAX_LISTED_ERRORS = 20
"""A body with many invalid parts gets the first few named, not a problem as large as the body."""


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document: every 4xx and 5xx the API answers."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    """The part of the request at fault (a body field such as ``duration``, a query or path parameter, a header)."""
    errors: list[dict[str, Any]] | None = None
    """Validation errors: every field at fault with its message (the first few)."""


_DESCRIPTIONS = {
    400: "The request could not be read.",
    401: "Not signed in, or not an active Lapse user (`X-Forwarded-Email`); or signed in too long ago for this "
    "decision (type `urn:lapse:problem:reauthentication-required`: sign in again at `reauthenticate_url`).",
    403: "Signed in, but not allowed to do this.",
    404: "Nothing by that name or id.",
    409: "Conflicts with the current state (already exists, already ended, missing in its target).",
    410: "Gone: shown once already.",
    413: "The request body is larger than the API reads.",
    422: "Invalid input; `field` names what was wrong.",
    429: "Too many requests now: try again after `Retry-After` seconds.",
    502: "The target system failed.",
    503: "The workflow service or a worker is unavailable now: nothing changed unless `detail` says so.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses=`` entries documenting these error statuses as problem documents."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "model": ProblemDetails,
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


STATUS: dict[RefusalKind, int] = {
    RefusalKind.UNAUTHENTICATED: 401,
    RefusalKind.REAUTHENTICATE: 401,
    RefusalKind.NOT_FOUND: 404,
    RefusalKind.FORBIDDEN: 403,
    RefusalKind.CONFLICT: 409,
    RefusalKind.INVALID: 422,
    RefusalKind.GONE: 410,
    RefusalKind.UNAVAILABLE: 503,
    RefusalKind.TARGET_FAILED: 502,
    RefusalKind.TOO_MANY: 429,
}
"""The HTTP status of each kind of refusal."""

TYPES: dict[RefusalKind, str] = {
    RefusalKind.REAUTHENTICATE: "urn:lapse:problem:reauthentication-required",
}
"""The problem ``type`` of the refusals a caller must tell apart from others of their status (``about:blank``
for the rest): a 401 that asks for a fresh sign-in, not a first one."""


class Problem(Exception):
    """An error only HTTP has (no sign-in header, or one that is no email; a browser origin): the services
    refuse with ``Refusal``."""

    def __init__(
        self, status: int, detail: str, *, field: str | None = None, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.retry_after = retry_after
        """Seconds the caller should wait before trying again (sent as ``Retry-After``)."""
        self.extra = extra


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the error responses' schema under ``application/problem+json`` only, the type they are sent as.

    FastAPI files a ``responses=`` model under ``application/json``; ours are documented with an empty
    ``application/problem+json`` entry (see ``responses``), which receives the schema here.
    """
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for response in (operation.get("responses") or {}).values():
                content = response.get("content") or {}
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return schema


def problem_response(
    status: int, detail: str, *, field: str | None = None, problem_type: str = "about:blank", **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type,
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


def _message(error: Any) -> str:
    """Pydantic's message, without the ``Value error, `` prefix our own validators' messages get."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def _discriminator(error: Any) -> str:
    """A body whose kind field (e.g. ``action``) names no known kind: that field is at fault."""
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        return str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
    return ""


def refusal_response(refusal: Refusal) -> JSONResponse:
    """The problem document answering ``refusal``: its kind's status, its message and field, and when to
    try again (``Retry-After``) if it says."""
    problem_type = TYPES.get(refusal.kind, "about:blank")
    response = problem_response(
        STATUS[refusal.kind], refusal.message, field=refusal.field, problem_type=problem_type, **refusal.extra
    )
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, error: Problem) -> JSONResponse:
        response = problem_response(error.status, error.detail, field=error.field, **error.extra)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(Refusal)
    async def _refusal(_request: Request, error: Refusal) -> JSONResponse:
        return refusal_response(error)

    @app.exception_handler(WorkflowUpdateFailedError)
    async def _workflow_refusal(_request: Request, error: WorkflowUpdateFailedError) -> JSONResponse:
        # The services audit and translate the refusals they expect; one they let through is answered alike.
        cause = error.cause
        if isinstance(cause, ApplicationError):
            return refusal_response(Refusal.of_workflow(cause))
        return refusal_response(Refusal(RefusalKind.CONFLICT, str(cause)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": "body" if e.get("type") == "json_invalid" else _field(e["loc"]) or _discriminator(e),
                "message": _message(e),
            }
            for e in error.errors()[:MAX_LISTED_ERRORS]
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        for item in errors:
            item["field"] = item["field"] or "body"  # the body as a whole (not an object, say)
        return problem_response(
            422, f"{first['field'] or 'body'}: {first['message']}", field=first["field"] or "body", errors=errors
        )

    @app.exception_handler(RPCError)
    async def _temporal(_request: Request, error: RPCError) -> JSONResponse:
        # Nothing was changed: Temporal refused or could not be reached before any state moved.
        return problem_response(503, f"the workflow service is unavailable, try again shortly ({error.message})")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's only 400 is a body it could not parse (not JSON, not UTF-8).
        field = "body" if error.status_code == 400 else None
        response = problem_response(error.status_code, str(error.detail), field=field)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _error: Exception) -> JSONResponse:
        # A bug: say nothing of it (it may quote a secret); the server log has the traceback.
        return problem_response(500, "internal error: the server log has the details")
