"""The issue's evidence test: a campaign over a real PostgreSQL integration, decided through the API by the
holders' manager, who keeps one membership and revokes another. The revoked one is gone from ``pg_auth_members``
and the kept one is not; the report, as CSV and as the printable page, shows for the revoke the audit event of
the revoke in the target and the grant's end, and its SHA-256 is that of its bytes (and in the audit log)."""

from __future__ import annotations

import csv
import hashlib
import html

from sqlmodel import col, select

from harness.postgres import PostgresServer
from starter.services.review_report import DIGEST_LABEL, ITEM_COLUMNS, check_report
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, Grant, ReviewCampaign
from tests.conftest import Api
from tests.e2e.test_review_campaigns import PG_ROLE, members_of, pg_members
from tests.support import eventually

__all__ = ["pg_members"]  # the campaigns' fixture: review_read granted to katherine and radia in the cluster

ADA = "ada@example.com"  # an admin, and katherine's and radia's manager
DEFINITION = {
    "name": "pg-proof",
    "scope": {"integrations": ["pg"]},
    "reviewers": [{"kind": "manager"}],
    "fallback": [{"kind": "user", "name": "grace@example.com"}],
    "deadline": "P14D",
    "reminders": [],
    "revoke": "at_once",
}


def _rows(text: str) -> dict[str, dict[str, str]]:
    """The report's item rows, by the holder's email."""
    rows = list(csv.reader(text.splitlines()))
    start = rows.index(list(ITEM_COLUMNS)) + 1
    return {row[1]: dict(zip(ITEM_COLUMNS, row, strict=True)) for row in rows[start:-1]}


async def test_a_manager_revokes_in_postgresql_and_the_report_proves_it(
    api: Api, settings: Settings, pg_members: str, postgres: PostgresServer
) -> None:
    assert members_of(postgres, "review_read") >= {"katherine", "radia"}
    await api.ok(ADA, "POST", "/api/reviews/definitions", DEFINITION)
    campaign = (await api.ok(ADA, "POST", "/api/reviews/definitions/pg-proof/start"))["campaign"]
    page = await api.ok(ADA, "GET", "/api/reviews/items", campaign=campaign)
    by_holder = {item["user"]: item["id"] for item in page["items"]}
    assert set(by_holder) == {"katherine@example.com", "radia@example.com"}
    revoke = {"items": [by_holder["katherine@example.com"]], "decision": "revoke", "comment": "moved to finance"}
    await api.ok(ADA, "POST", "/api/reviews/items/draft", revoke)
    keep = {"items": [by_holder["radia@example.com"]], "decision": "keep"}
    await api.ok(ADA, "POST", "/api/reviews/items/draft", keep)
    assert (await api.ok(ADA, "POST", "/api/reviews/items/submit", {}))["decided"] == 2

    # At once (the definition's ``revoke: at_once``): the membership goes while the campaign is still open.
    await eventually(
        lambda: members_of(postgres, "review_read"),
        until=lambda members: "katherine" not in members,
        what="katherine's review_read membership to be revoked in PostgreSQL",
    )
    await api.ok(ADA, "POST", f"/api/reviews/campaigns/{campaign}/close")

    def closed() -> ReviewCampaign | None:
        with session_scope(settings.db_url, write=False) as session:
            return session.get(ReviewCampaign, campaign)

    await eventually(closed, until=lambda c: c is not None and c.state == "closed", what="the campaign to close")
    assert "radia" in members_of(postgres, "review_read")  # the kept membership stays
    assert "katherine" not in members_of(postgres, "review_read")

    async def report() -> str:
        response = await api.call(ADA, "GET", f"/api/reviews/campaigns/{campaign}/report.csv")
        assert response.status_code == 200, response.text
        return response.text

    text = await eventually(
        report,
        until=lambda t: {r["outcome"] for r in _rows(t).values()} == {"revoked", "kept"},
        what="the report to show both items acted on",
    )
    with session_scope(settings.db_url, write=False) as session:
        grants = {g.account: g for g in session.exec(select(Grant).where(Grant.role == PG_ROLE))}
        revoked = grants["katherine"]
        (event,) = session.exec(
            select(AuditEvent).where(AuditEvent.action == "grant.revoked", AuditEvent.target == PG_ROLE)
        ).all()
    assert not revoked.active and revoked.ended_at is not None and grants["radia"].active
    assert (event.actor, event.details["grant_id"], event.details["account"]) == (ADA, revoked.id, "katherine")
    assert event.details["still_held"] is False  # the target was called: no other grant covered it
    assert event.reason.startswith(f"access review {campaign}: moved to finance")

    rows = _rows(text)
    gone, kept = rows["katherine@example.com"], rows["radia@example.com"]
    assert (gone["decision"], gone["decided_by"], gone["comment"], gone["outcome"]) == (
        "revoke",
        ADA,
        "moved to finance",
        "revoked",
    )
    assert gone["revoke_audit_event"] == str(event.id)
    assert gone["grant_ended_at"] == revoked.ended_at.isoformat()
    assert (kept["decision"], kept["outcome"], kept["revoke_audit_event"], kept["grant_ended_at"]) == (
        "keep",
        "kept",
        "",
        "",
    )

    # The SHA-256 on the last line is that of every byte above it, and the audit log recorded the same one.
    body, _, last = text.rstrip("\r\n").rpartition("\r\n")
    digest = hashlib.sha256((body + "\r\n").encode()).hexdigest()
    assert last == f'"{DIGEST_LABEL}","{digest}"' and check_report(text) == (True, digest)
    assert not check_report(text.replace('"revoked"', '"kept"', 1))[0]  # an edit is seen

    # The printable page: the same proof in katherine's row, and its own SHA-256 (of its CSV form), recorded too.
    response = await api.call(ADA, "GET", f"/admin/reviews/campaigns/{campaign}/report")
    assert response.status_code == 200, response.text
    page_html = html.unescape(response.text)
    row = next(r for r in page_html.split("<tr>") if "katherine@example.com" in r)
    assert f"<td>{event.id}</td>" in row and f"<td>{revoked.ended_at.isoformat()}</td>" in row
    assert "<td>moved to finance</td>" in row and "<td>revoked</td>" in row
    with session_scope(settings.db_url, write=False) as session:
        made = session.exec(
            select(AuditEvent).where(AuditEvent.action == "review.report").order_by(col(AuditEvent.id))
        ).all()
    assert [(e.target, e.details["format"]) for e in made][-2:] == [(campaign, "csv"), (campaign, "html")]
    assert digest in {e.details["sha256"] for e in made if e.details["format"] == "csv"}
    assert f'<code class="digest">{made[-1].details["sha256"]}</code>' in page_html
