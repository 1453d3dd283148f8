"""What a reviewer weighs beside the holder: their department, as the organisation file says it now, and the last
time the access was seen in use — the later of what the campaign snapshotted and what discovery saw since, or,
plainly, "unknown". Shown alike by the API, the Reviews page, the CLI's listing and the report; and how Active
Directory's ``lastLogonTimestamp`` (a Windows FILETIME) is read."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.connectors.ldap import filetime
from starter.services import review_decisions
from starter.services.review_report import check_report
from store.db import session_scope
from store.settings import Settings
from store.tables import Grant
from tests.api.identities import client, offline_app
from tests.api.review_fixtures import CAMPAIGN, T0, campaign, item, user
from tests.conftest import load_into, make_settings
from tests.test_cli_reviews import Lapse, lapse

__all__ = ["lapse"]  # the CLI tests' fixture: ``lapse`` commands answered by this test's app

LINUS = {"X-Forwarded-Email": "linus@example.com"}
ADA = {"X-Forwarded-Email": "ada@example.com"}
SEEN = datetime(2026, 3, 5, 14, 30, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(settings)) as http:
        yield http


def grant(settings: Settings, holder: str, role: str, *, last_used_at: datetime | None = None) -> int:
    with session_scope(settings.db_url) as session:
        row = Grant(
            account=holder.partition("@")[0],
            role=role,
            user_email=holder,
            path="external",
            granted_at=T0 - timedelta(days=40),
            last_used_at=last_used_at,
        )
        session.add(row)
        session.flush()
        return row.id or 0


def seen_in_use(settings: Settings, grant_id: int, at: datetime) -> None:
    """What discovery writes when it sees the grant's account in use."""
    with session_scope(settings.db_url) as session:
        row = session.get(Grant, grant_id)
        assert row is not None
        row.last_used_at = at
        session.add(row)


def two_items(settings: Settings) -> dict[str, int]:
    """linus reviews alan's grant (never seen in use when the campaign started) and barbara's (seen in use then)."""
    alan = grant(settings, "alan@example.com", "ledger/prod-db/read")
    barbara = grant(settings, "barbara@example.com", "ledger/prod-db/write", last_used_at=SEEN - timedelta(days=1))
    ids = campaign(
        settings,
        [
            item("alan@example.com", "ledger/prod-db/read", "linus@example.com", grant=alan, path="external"),
            item(
                "barbara@example.com",
                "ledger/prod-db/write",
                "linus@example.com",
                grant=barbara,
                path="external",
                last_used=SEEN,  # the snapshot's
            ),
        ],
    )
    return {"alan": ids[0], "barbara": ids[1], "alan-grant": alan, "barbara-grant": barbara}


async def items_of(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/api/reviews/items", headers=LINUS)
    assert response.status_code == 200, response.text
    return {i["user"]: i for i in response.json()["items"]}


async def test_the_holders_department_from_the_organisation_file_shows_on_their_review_items(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ids = two_items(settings)
    shown = await items_of(http)
    # The demo organisation file gives each user a department.
    assert shown["alan@example.com"]["department"] == "Platform"
    assert shown["barbara@example.com"]["department"] == "Platform"
    # One item alone (the reassign page's) reads it the same way.
    assert review_decisions.my_item(settings, user(settings, "linus@example.com"), ids["alan"]).department == "Platform"

    # Read live, as the holder's name is: a file that moves alan to another department shows at once.
    load_into(
        settings,
        {"users": [{"email": "alan@example.com", "name": "Alan Turing", "manager": "linus@example.com",
                    "department": "Research", "groups": ["engineering", "platform", "oncall-platform"]}]},
    )  # fmt: skip
    assert (await items_of(http))["alan@example.com"]["department"] == "Research"
    # A file that names no department leaves the user with none, said as nothing rather than a guess.
    load_into(settings, {"users": [{"email": "alan@example.com", "name": "Alan Turing", "department": "  "}]})
    assert user(settings, "alan@example.com").department is None
    assert (await items_of(http))["alan@example.com"]["department"] is None

    # The Reviews page says it beside the manager.
    page = await http.get("/reviews", headers=LINUS)
    assert page.status_code == 200
    assert "Platform department" in page.text  # barbara's


async def test_last_used_is_the_later_of_the_snapshot_and_what_discovery_saw_since_else_unknown(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ids = two_items(settings)
    shown = await items_of(http)
    alan, barbara = shown["alan@example.com"], shown["barbara@example.com"]
    assert (alan["last_used"], alan["last_used_said"]) == (None, "unknown")
    # The grant's own last use is older than the snapshot's: the snapshot's stands.
    assert datetime.fromisoformat(barbara["last_used"]) == SEEN
    assert barbara["last_used_said"] == "2026-03-05 14:30 UTC"

    # Discovery sees alan's access in use after the campaign started: the item says so without a new campaign.
    later = SEEN + timedelta(days=2, minutes=7)
    seen_in_use(settings, ids["alan-grant"], later)
    alan = (await items_of(http))["alan@example.com"]
    assert datetime.fromisoformat(alan["last_used"]) == later and alan["last_used_said"] == "2026-03-07 14:37 UTC"

    page = await http.get("/reviews", headers=LINUS)
    assert page.status_code == 200
    assert '<time datetime="2026-03-07T14:37:00Z">2026-03-07 14:37 UTC</time>' in page.text

    # The report lists the department beside the manager, and the same last use.
    response = await http.get(f"/api/reviews/campaigns/{CAMPAIGN}/report.csv", headers=ADA)
    assert response.status_code == 200
    ok, _ = check_report(response.text)
    assert ok
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    header = rows.index(next(r for r in rows if r and r[0] == "item"))
    assert rows[header].index("department") == rows[header].index("manager") + 1
    reported = {r["user"]: r for r in (dict(zip(rows[header], row, strict=True)) for row in rows[header + 1 : -1])}
    assert reported["alan@example.com"]["department"] == "Platform"
    assert reported["alan@example.com"]["last_used"] == "2026-03-07T14:37:00Z"
    assert reported["barbara@example.com"]["last_used"] == "2026-03-05T14:30:00Z"


async def test_the_cli_lists_the_department_and_the_last_use(lapse: Lapse, settings: Settings) -> None:
    ids = two_items(settings)
    seen_in_use(settings, ids["alan-grant"], SEEN + timedelta(hours=1))
    listed = await lapse("--as", "linus@example.com", "reviews", "items")
    assert listed.exit_code == 0, listed.output
    assert "Platform department, last used 2026-03-05 15:30 UTC" in listed.output  # alan's
    assert "Platform department, last used 2026-03-05 14:30 UTC" in listed.output  # barbara's, as snapshotted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("133485408000000000", datetime(2024, 1, 1, tzinfo=UTC)),  # 2024-01-01T00:00Z in 100 ns ticks since 1601
        (" 133485408000000010 ", datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),  # ten ticks: one microsecond
        ("116444736000000000", datetime(1970, 1, 1, tzinfo=UTC)),
        ("0", None),  # AD's "never logged on"
        ("9223372036854775807", None),  # the largest FILETIME: "never" too
        ("2650467744000000000", None),  # past the year 9999: not a real logon
        ("-5", None),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_active_directory_last_logon_is_read_as_a_utc_time(value: str | None, expected: datetime | None) -> None:
    assert filetime(value) == expected
