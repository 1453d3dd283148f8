"""Birthright exceptions through /api/birthright: an access review's revoke, shown on its policy and in its preview;
an admin removes one (audited) and the sync grants the role again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from store.db import session_scope
from store.settings import Settings
from store.tables import BirthrightException, Grant
from tests.api.answers import problem
from tests.conftest import Api
from tests.support import eventually

ADMIN = "ada@example.com"
HOLDER = "katherine@example.com"  # the finance group's one member
VIEWER = "ledger/billing-reports/viewer"
POLICY = "/api/birthright/policies/finance"


def _held(settings: Settings) -> bool:
    with session_scope(settings.db_url, write=False) as session:
        return (
            session.exec(
                select(Grant).where(
                    Grant.user_email == HOLDER, Grant.role == VIEWER, Grant.path == "birthright", col(Grant.active)
                )
            ).first()
            is not None
        )


async def test_an_exception_is_shown_on_its_policy_and_in_the_preview_and_an_admin_removes_it(
    api: Api, settings: Settings, audit: Any
) -> None:
    since = datetime.now(UTC)
    await api.ok(
        ADMIN, "POST", "/api/birthright/policies", {"name": "finance", "groups": ["finance"], "roles": [VIEWER]}
    )
    await api.sync_run("birthright", since)
    assert _held(settings)
    made = datetime.now(UTC)
    with session_scope(settings.db_url) as session:  # what a review's revoke of her birthright grant records
        session.add(
            BirthrightException(
                policy="finance",
                user_email=HOLDER,
                role=VIEWER,
                created_by="radia@example.com",
                created_at=made,
                comment="access review quarterly-20260101T000000: left the finance team",
                campaign_id="quarterly-20260101T000000",
                item_id=7,
            )
        )
    since = datetime.now(UTC)
    await api.ok(ADMIN, "POST", "/api/birthright/sync")
    await api.sync_run("birthright", since)
    assert not _held(settings)  # the plan honours the exception

    policy = await api.ok(ADMIN, "GET", POLICY)
    [shown] = policy["exceptions"]
    assert {k: v for k, v in shown.items() if k not in ("id", "created_at")} == {
        "user": HOLDER,
        "role": VIEWER,
        "created_by": "radia@example.com",
        "campaign_id": "quarterly-20260101T000000",
        "comment": "access review quarterly-20260101T000000: left the finance team",
    }
    assert datetime.fromisoformat(shown["created_at"]) == made
    listed = {p["name"]: p for p in await api.ok(ADMIN, "GET", "/api/birthright/policies")}
    assert listed["finance"]["exceptions"] == [shown]

    page = await api.call(ADMIN, "GET", "/admin/birthright")  # the admin page lists it, with its remove button
    assert page.status_code == 200 and "Exceptions to finance" in page.text and HOLDER in page.text
    assert f"/admin/birthright/policies/finance/exceptions/{shown['id']}/remove" in page.text

    # The preview of a change says who the policy does not grant to because of an exception.
    preview = await api.ok(
        ADMIN,
        "POST",
        "/api/birthright/preview",
        {"action": "update", "name": "finance", "changes": {"description": "x"}},
    )
    assert preview["excepted"] == [{"user": HOLDER, "role": VIEWER, "policy": "finance"}]
    assert preview["gains"] == [] and preview["losses"] == []

    # Removing it: only an admin, only an exception of that policy; audited; the sync grants the role again.
    path = f"{POLICY}/exceptions/{shown['id']}"
    problem(await api.call(HOLDER, "DELETE", path), 403)
    problem(await api.call(ADMIN, "DELETE", f"{POLICY}/exceptions/{shown['id'] + 1}"), 404, "exception_id")
    await api.ok(ADMIN, "POST", "/api/birthright/policies", {"name": "other", "groups": ["finance"], "roles": [VIEWER]})
    problem(await api.call(ADMIN, "DELETE", f"/api/birthright/policies/other/exceptions/{shown['id']}"), 404)
    assert (await api.call(ADMIN, "DELETE", "/api/birthright/policies/other")).status_code == 204
    response = await api.call(ADMIN, "DELETE", path)
    assert response.status_code == 204, response.text
    assert (await api.ok(ADMIN, "GET", POLICY))["exceptions"] == []
    [removed] = [e for e in audit("finance") if e.action == "birthright_exception.removed"]
    assert removed.actor == ADMIN and removed.details["user"] == HOLDER and removed.details["role"] == VIEWER
    assert removed.details["campaign_id"] == "quarterly-20260101T000000"
    # The removal's own sync grants it (one started by an earlier change may run first, before the removal).
    await eventually(lambda: _held(settings), what=f"the sync to grant {VIEWER} to {HOLDER} again")
    problem(await api.call(ADMIN, "DELETE", path), 404)
