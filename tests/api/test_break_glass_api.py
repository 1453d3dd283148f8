"""The break-glass API beside the flow (tests/e2e/test_break_glass.py): an admin allows or takes away a role's
emergency access, the catalog shows it, and the admins' list puts flagged reviews first, on every app DB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store.db import session_scope
from store.settings import Settings
from store.tables import BreakGlassReview
from tests.conftest import Api

ADMIN = "ada@example.com"
READ_ROLE = "/api/integrations/ledger/roles/prod-db/read"


async def test_an_admin_allows_and_takes_away_a_roles_emergency_access(api: Api) -> None:
    allowed = {"max_duration": "PT30M", "review_within": "PT12H", "notify": ["security"]}
    changed = await api.ok(ADMIN, "PATCH", READ_ROLE, {"break_glass": allowed})
    assert changed["break_glass"] == {"max_duration": "PT30M", "review_within": "PT12H", "notify": ["security"]}
    catalog = {e["role"]: e for e in await api.ok("linus@example.com", "GET", "/api/catalog")}
    assert catalog["ledger/prod-db/read"]["break_glass"]["max_duration"] == "PT30M"

    unknown = await api.call(ADMIN, "PATCH", READ_ROLE, {"break_glass": {**allowed, "notify": ["no-such-team"]}})
    assert unknown.status_code == 422 and "no-such-team" in unknown.json()["detail"]

    taken = await api.ok(ADMIN, "PATCH", READ_ROLE, {"break_glass": None})
    assert taken["break_glass"] is None
    body = {"role": "ledger/prod-db/read", "duration": "PT10M", "justification": "outage", "emergency": True}
    refused = await api.call("linus@example.com", "POST", "/api/requests", body)
    assert refused.status_code == 403 and "break-glass" in refused.json()["detail"]


async def test_the_admins_list_puts_flagged_ones_first(api: Api, settings: Settings) -> None:
    now = datetime.now(UTC)
    states = {"req-open": "open", "req-confirmed": "confirmed", "req-condemned": "condemned", "req-late": "unreviewed"}
    with session_scope(settings.db_url) as session:
        for age, (request_id, state) in enumerate(states.items()):
            opened = now - timedelta(minutes=age)
            session.add(
                BreakGlassReview(
                    request_id=request_id,
                    requester="linus@example.com",
                    role="ledger/prod-db/write",
                    state=state,
                    opened_at=opened,
                    deadline=opened + timedelta(hours=24),
                    reviewers=["grace@example.com"],
                )
            )
    listed = [r["request_id"] for r in await api.ok(ADMIN, "GET", "/api/break-glass")]
    assert listed == ["req-condemned", "req-late", "req-open", "req-confirmed"]
    flagged = [r["request_id"] for r in await api.ok(ADMIN, "GET", "/api/break-glass", flagged="true")]
    assert flagged == ["req-condemned", "req-late"]
