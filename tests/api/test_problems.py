"""Refusals become RFC 9457 problems in one place: every kind its status, its message and the field at fault."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from access.errors import Refusal, RefusalKind
from access.policy import InvalidRequest, NoEligibleApprovers, NotRequestable
from starter.api import problems

Answer = Callable[[Exception], Awaitable[httpx.Response]]
"""How the API answers a route that fails with this error."""


def _app(error: Exception) -> FastAPI:
    """An app whose one route fails with ``error``, answered by the API's own handlers."""
    app = FastAPI()
    problems.install(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    return app


@pytest_asyncio.fixture
async def answer() -> AsyncIterator[Answer]:
    async def call(error: Exception) -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(error))
        async with httpx.AsyncClient(transport=transport, base_url="http://lapse.test") as http:
            return await http.get("/fail")

    yield call


@pytest.mark.parametrize(
    ("kind", "status", "title"),
    [
        (RefusalKind.NOT_FOUND, 404, "Not Found"),
        (RefusalKind.FORBIDDEN, 403, "Forbidden"),
        (RefusalKind.CONFLICT, 409, "Conflict"),
        (RefusalKind.INVALID, 422, "Unprocessable Entity"),
        (RefusalKind.GONE, 410, "Gone"),
        (RefusalKind.UNAVAILABLE, 503, "Service Unavailable"),
        (RefusalKind.TARGET_FAILED, 502, "Bad Gateway"),
    ],
)
async def test_every_refusal_kind_is_answered_with_its_status(
    answer: Answer, kind: RefusalKind, status: int, title: str
) -> None:
    response = await answer(Refusal(kind, "what went wrong", field="thing"))
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json() == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "what went wrong",
        "field": "thing",
    }
    assert "Retry-After" not in response.headers


def test_every_refusal_kind_has_a_status() -> None:
    assert set(problems.STATUS) == set(RefusalKind)


async def test_a_refusal_without_a_field_names_none(answer: Answer) -> None:
    response = await answer(Refusal(RefusalKind.CONFLICT, "already ended"))
    assert response.status_code == 409 and "field" not in response.json()


async def test_unavailable_says_when_to_try_again_and_what_may_have_started(answer: Answer) -> None:
    refusal = Refusal(RefusalKind.UNAVAILABLE, "try again", retry_after=5, extra={"id": "k3v9q2m7xw"})
    response = await answer(refusal)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["id"] == "k3v9q2m7xw"


@pytest.mark.parametrize(
    ("error", "status", "field"),
    [
        (NotRequestable("role", "no approval workflow"), 403, "role"),
        (InvalidRequest("justification", "requires a justification"), 422, "justification"),
        (NoEligibleApprovers("role", "nobody is eligible"), 422, "role"),
    ],
)
async def test_policy_refusals_are_refusals_of_their_kind(
    answer: Answer, error: Refusal, status: int, field: str
) -> None:
    response = await answer(error)
    assert response.status_code == status and response.json()["field"] == field


@pytest.mark.parametrize(
    ("kind", "details", "status", "field"),
    [
        ("Forbidden", (), 403, None),
        ("Conflict", (), 409, None),
        # The field comes from the workflow's refusal, whatever it is: not every invalid input is a duration.
        ("Invalid", ("duration",), 422, "duration"),
        ("Invalid", ("justification",), 422, "justification"),
        ("SomethingElse", (), 409, None),
    ],
)
async def test_a_workflow_refusal_is_answered_by_its_kind_and_field(
    answer: Answer, kind: str, details: tuple[str, ...], status: int, field: str | None
) -> None:
    response = await answer(WorkflowUpdateFailedError(ApplicationError("refused by the workflow", *details, type=kind)))
    assert response.status_code == status
    body = response.json()
    assert body["detail"] == "refused by the workflow" and body.get("field") == field


def test_the_workflow_kind_strings_stay_as_recorded_histories_have_them() -> None:
    assert [kind.value for kind in (RefusalKind.FORBIDDEN, RefusalKind.CONFLICT, RefusalKind.INVALID)] == [
        "Forbidden",
        "Conflict",
        "Invalid",
    ]
