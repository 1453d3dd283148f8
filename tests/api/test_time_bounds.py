"""Every time a caller sends (a query parameter, a form field, a page cursor) is taken to UTC and bounded to the
years a database can compare with: a time just past either end once in UTC is a 422 naming the field, never a 500,
and never a CSV download that starts and then breaks off."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from starter.api.app import create_app
from starter.services.fields import utc_moment
from starter.services.permissions import GrantFilter
from store.settings import Settings
from tests.api.answers import problem
from tests.conftest import make_settings

AS_ADMIN = {"X-Forwarded-Email": "ada@example.com"}
EXTREMES = ["0001-01-01T00:00+01:00", "9999-12-31T23:00-05:00"]
"""Before year 1 and after year 9999 once in UTC: ``astimezone`` overflows on both."""

API_TIMES = [("/api/audit", "since"), ("/api/audit", "until"), ("/api/audit.csv", "since"), ("/api/audit.csv", "until")]
"""Every time the API takes (``test_the_api_takes_no_other_time`` keeps this list whole)."""
PAGE_TIMES = [
    ("/admin/audit", "since"),
    ("/admin/audit", "until"),
    ("/admin/audit/verify", "since"),
    ("/admin/audit.csv", "since"),
    ("/admin/audit.csv", "until"),
    ("/admin/grants", "expiring_before"),
]
"""Every time a page takes, as a ``datetime-local`` field (or a link) sends it."""


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation, no Temporal behind it: these inputs are refused before anything is asked of it."""
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield client


@pytest.mark.parametrize("moment", EXTREMES)
@pytest.mark.parametrize(("path", "field"), API_TIMES)
async def test_an_api_time_out_of_range_is_a_422_naming_it(
    http: httpx.AsyncClient, path: str, field: str, moment: str
) -> None:
    response = await http.get(path, params={field: moment}, headers=AS_ADMIN)
    assert "years 1 to 9998" in problem(response, 422, field)  # the CSV too: refused before any row is sent


@pytest.mark.parametrize("moment", EXTREMES)
@pytest.mark.parametrize(("path", "field"), PAGE_TIMES)
async def test_a_page_time_out_of_range_is_a_422_naming_it(
    http: httpx.AsyncClient, path: str, field: str, moment: str
) -> None:
    response = await http.get(path, params={field: moment}, headers=AS_ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"{field}: " in response.text and "years 1 to 9998" in response.text


def _cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
@pytest.mark.parametrize("sort", ["since", "until"])
async def test_a_crafted_cursor_out_of_range_is_a_422(http: httpx.AsyncClient, sort: str, moment: str) -> None:
    cursor = _cursor(sort, "asc", False, moment, 1)
    response = await http.get("/admin/grants", params={"sort": sort, "cursor": cursor}, headers=AS_ADMIN)
    assert response.status_code == 422, response.text
    assert "cursor: this page link is not one the permissions table made for this order" in response.text


async def test_times_within_range_still_filter(http: httpx.AsyncClient) -> None:
    """Near either end, once in UTC, is a time like any other: nothing is refused, nothing matches."""
    for moment in ("0001-01-01T02:00+01:00", "9998-12-31T23:00-00:30"):
        for path in ("/api/audit", "/api/audit.csv"):
            response = await http.get(path, params={"until": moment, "since": moment}, headers=AS_ADMIN)
            assert response.status_code == 200, response.text
        page = await http.get("/admin/grants", params={"expiring_before": moment[:16]}, headers=AS_ADMIN)
        assert page.status_code == 200, page.text


def test_a_time_is_taken_to_utc_and_bounded() -> None:
    assert utc_moment(datetime.fromisoformat("2026-12-01T10:30+01:00")) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert utc_moment(datetime(2026, 12, 1, 9, 30)) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)  # no zone: UTC
    for moment in [*EXTREMES, "9999-06-01T00:00Z"]:
        with pytest.raises(ValueError, match="years 1 to 9998"):
            utc_moment(datetime.fromisoformat(moment))
    assert GrantFilter.asked(expiring_before="2026-12-05T10:00+02:00").expiring_before == datetime(
        2026, 12, 5, 8, tzinfo=UTC
    )


def test_the_api_takes_no_other_time(settings: Settings) -> None:
    """A new time parameter or body field must join ``API_TIMES`` (and be a ``Moment``): this finds any."""
    schema = create_app(settings, client=None).openapi()
    found = set()
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if "date-time" in json.dumps(parameter["schema"]):
                    found.add((path, parameter["name"]))
            body = json.dumps(operation.get("requestBody", {}))
            refs = {ref.rsplit("/", 1)[-1] for ref in _refs(body)}
            for name in refs:
                if "date-time" in json.dumps(_closure(schema, name)):
                    found.add((path, f"body:{name}"))
    assert found == set(API_TIMES)


def _refs(text: str) -> list[str]:
    return [part.split('"', 1)[0] for part in text.split('"$ref": "')[1:]]


def _closure(schema: dict[str, Any], name: str, seen: set[str] | None = None) -> list[Any]:
    """The component ``name`` and every component it refers to."""
    seen = seen if seen is not None else set()
    if name in seen:
        return []
    seen.add(name)
    component = schema["components"]["schemas"][name]
    return [
        component,
        *(c for ref in _refs(json.dumps(component)) for c in _closure(schema, ref.rsplit("/", 1)[-1], seen)),
    ]
