"""Review definitions through the API (admins): checked against the catalog and directory, previewed before they
are saved, audited; a recurring one's schedule is said to wait when Temporal does not answer. Campaigns listed and
read. No Temporal here: starting a campaign is tested with the workflow (tests/api/test_reviews_flow.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlmodel import col, select

from store.db import session_scope
from store.org import OrgError
from store.settings import Settings
from store.tables import AuditEvent, Grant
from tests.api.identities import client, offline_app
from tests.api.review_fixtures import CAMPAIGN, linus_campaign
from tests.conftest import load_into, make_settings

ADA = {"X-Forwarded-Email": "ada@example.com"}
LINUS = {"X-Forwarded-Email": "linus@example.com"}


def quarterly(**changes: Any) -> dict[str, Any]:
    return {
        "name": "quarterly-ledger",
        "description": "Who still needs the ledger",
        "scope": {"integrations": ["ledger"], "paths": ["jit", "external"]},
        "reviewers": [{"kind": "manager"}],
        "fallback": [{"kind": "user", "name": "ada@example.com"}],
        "deadline": "P14D",
        "reminders": ["P7D", "P3D", "P1D", "PT0S"],
        "default": "revoke",
        "revoke": "at_close",
        **changes,
    }


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


@pytest_asyncio.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client(offline_app(settings)) as http:
        yield http


def _grant(settings: Settings, email: str, role: str, path: str = "jit", **values: Any) -> None:
    with session_scope(settings.db_url) as session:
        session.add(
            Grant(
                account=email,
                role=role,
                user_email=email,
                path=path,
                granted_at=datetime.now(UTC) - timedelta(days=30),
                **values,
            )
        )


def _actions(settings: Settings, target: str) -> list[str]:
    with session_scope(settings.db_url, write=False) as session:
        query = select(AuditEvent.action).where(AuditEvent.target == target).order_by(col(AuditEvent.id))
        return list(session.exec(query))


async def test_a_definition_is_previewed_saved_changed_and_deleted_with_an_audit_trail(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    _grant(settings, "alan@example.com", "ledger/prod-db/read", request_id="r1")
    _grant(settings, "barbara@example.com", "ledger/prod-db/write", request_id="r2")
    _grant(settings, "ken@example.com", "ledger/payments-api/deploy", path="external")
    _grant(settings, "grace@example.com", "ledger/prod-db/read", path="birthright", policy="p")  # not in scope
    preview = (await http.post("/api/reviews/preview", json=quarterly(), headers=ADA)).json()
    assert (preview["items"], preview["reviewers"], preview["by_path"]) == (3, 2, {"jit": 2, "external": 1})
    assert {(s["user_email"], s["reviewer"]) for s in preview["sample"]} == {
        ("alan@example.com", "linus@example.com"),
        ("barbara@example.com", "linus@example.com"),
        ("ken@example.com", "margaret@example.com"),
    }
    assert _actions(settings, "quarterly-ledger") == []  # a preview saves nothing
    created = await http.post("/api/reviews/definitions", json=quarterly(), headers=ADA)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["source"] == "api" and out["schedule"] is None and out["notes"] == [] and out["campaigns"] == 0
    again = await http.post("/api/reviews/definitions", json=quarterly(), headers=ADA)
    assert again.status_code == 409
    stored = (await http.get("/api/reviews/definitions/quarterly-ledger/preview", headers=ADA)).json()
    assert stored["items"] == 3
    # Made recurring: saved, and the schedule is said to wait for Temporal (none answers here).
    recurring = await http.put(
        "/api/reviews/definitions/quarterly-ledger", json=quarterly(schedule={"every": "P91D"}), headers=ADA
    )
    assert recurring.status_code == 200
    assert recurring.json()["schedule"] == "review-quarterly-ledger"
    assert "review-quarterly-ledger is brought up to date when the API next starts" in recurring.json()["notes"][0]
    renamed = await http.put("/api/reviews/definitions/quarterly-ledger", json=quarterly(name="other"), headers=ADA)
    assert renamed.status_code == 422 and renamed.json()["field"] == "name"
    listed = (await http.get("/api/reviews/definitions", headers=ADA)).json()
    assert [d["definition"]["name"] for d in listed] == ["quarterly-ledger"]
    deleted = await http.delete("/api/reviews/definitions/quarterly-ledger", headers=ADA)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == "quarterly-ledger"
    assert (await http.get("/api/reviews/definitions/quarterly-ledger", headers=ADA)).status_code == 404
    assert _actions(settings, "quarterly-ledger") == [
        "review_definition.created",
        "review_definition.updated",
        "review_definition.deleted",
    ]


@pytest.mark.parametrize(
    ("changes", "field", "said"),
    [
        ({"scope": {"integrations": ["nope"]}}, "scope.integrations", "there is no integration 'nope'"),
        ({"scope": {"roles": ["ledger/prod-db/nope"]}}, "scope.roles", "there is no role 'ledger/prod-db/nope'"),
        ({"scope": {"roles": ["ledger"]}}, "scope.roles", "is not integration/resource/role"),
        ({"scope": {"resources": ["ledger/nope"]}}, "scope.resources", "there is no resource 'ledger/nope'"),
        ({"scope": {"group": "no-such-group"}}, "scope.group", "no-such-group"),
        ({"scope": {"manager": "nobody@example.com"}}, "scope.manager", "there is no user"),
        ({"reviewers": [{"kind": "user", "name": "nobody@example.com"}]}, "reviewers.0.name", "there is no user"),
        ({"fallback": [{"kind": "group", "name": "nope"}]}, "fallback.0.name", "nope"),
        ({"description": "x" * 2001}, "description", "at most 2000"),
        ({"name": "Not A Name"}, "name", "pattern"),
        ({"reminders": ["P15D"]}, "", "shorter than the deadline"),
        ({"deadline": "PT10S"}, "deadline", "between PT1M and P366D"),
        ({"schedule": {"every": "P1D", "cron": "0 0 * * *"}}, "schedule", "exactly one of"),
    ],
)
async def test_bad_definitions_are_refused_naming_the_field(
    http: httpx.AsyncClient, changes: dict[str, Any], field: str, said: str
) -> None:
    for path in ("/api/reviews/definitions", "/api/reviews/preview"):
        response = await http.post(path, json=quarterly(**changes), headers=ADA)
        assert response.status_code == 422, response.text
        problem = response.json()
        fields = [problem.get("field") or "", *(e.get("field") or "" for e in problem.get("errors") or [])]
        assert any(f.endswith(field) for f in fields), (fields, field)
        assert said in response.text


async def test_only_admins_define_reviews_and_read_campaigns(settings: Settings, http: httpx.AsyncClient) -> None:
    linus_campaign(settings)
    for method, path, body in (
        ("GET", "/api/reviews/definitions", None),
        ("POST", "/api/reviews/definitions", quarterly()),
        ("POST", "/api/reviews/preview", quarterly()),
        ("GET", "/api/reviews/campaigns", None),
        ("GET", f"/api/reviews/campaigns/{CAMPAIGN}", None),
        ("GET", f"/api/reviews/campaigns/{CAMPAIGN}/report.csv", None),
        ("POST", f"/api/reviews/campaigns/{CAMPAIGN}/close", None),
    ):
        response = await http.request(method, path, json=body, headers=LINUS)
        assert response.status_code == 403, (method, path, response.text)


async def test_campaigns_show_their_progress(settings: Settings, http: httpx.AsyncClient) -> None:
    ids = linus_campaign(settings)
    await http.post("/api/reviews/items/draft", json={"items": [ids["alan-read"]], "decision": "keep"}, headers=LINUS)
    await http.post("/api/reviews/items/submit", json={}, headers=LINUS)
    (listed,) = (await http.get("/api/reviews/campaigns", headers=ADA)).json()
    assert (listed["id"], listed["state"], listed["by_state"]) == (CAMPAIGN, "open", {"open": 5, "decided": 1})
    detail = (await http.get(f"/api/reviews/campaigns/{CAMPAIGN}", headers=ADA)).json()
    assert [(p["reviewer"], p["open"], p["decided"]) for p in detail["progress"]] == [
        ("linus@example.com", 4, 1),
        ("grace@example.com", 1, 0),
    ]
    assert (await http.get("/api/reviews/campaigns/nope-20260101T000000", headers=ADA)).status_code == 404
    closed = await http.get("/api/reviews/campaigns", params={"state": "closed"}, headers=ADA)
    assert closed.json() == []


async def test_the_organisation_files_reviews_are_checked_and_stored(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    bad = {"reviews": [quarterly(scope={"roles": ["ledger/prod-db/nope"]})]}
    with pytest.raises(OrgError) as refused:
        load_into(settings, bad)
    assert refused.value.problems[0].field == "reviews.0.scope.roles"
    assert "there is no role 'ledger/prod-db/nope'" in str(refused.value)
    load_into(settings, {"reviews": [quarterly(schedule={"cron": "0 9 1 1,4,7,10 *"})]})
    (stored,) = (await http.get("/api/reviews/definitions", headers=ADA)).json()
    assert (stored["source"], stored["updated_by"], stored["schedule"]) == (
        "file",
        "org-file",
        "review-quarterly-ledger",
    )
    assert stored["definition"]["schedule"] == {"every": None, "cron": "0 9 1 1,4,7,10 *"}
