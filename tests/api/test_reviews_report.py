"""A campaign's report (``GET /api/reviews/campaigns/{id}/report.csv``): every item with its decision, who, when,
the comment and the proof of a revoke; no cell a spreadsheet would run; its SHA-256 on its last line, matching the
audit event that records it, and the audit chain's head when it was made."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import col, select

from access.reviews import ItemState
from access.types import AuditEntry
from starter.services.review_report import check_report
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, ReviewCampaign
from tests.api.identities import client, offline_app
from tests.api.review_fixtures import CAMPAIGN, linus_campaign, set_state
from tests.conftest import make_settings

ADA = {"X-Forwarded-Email": "ada@example.com"}
ENDED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, app_db: str) -> Settings:
    return make_settings(tmp_path, "127.0.0.1:1", database_url=app_db)


async def test_the_report_lists_every_item_with_its_proof_and_its_own_digest(settings: Settings) -> None:
    ids = linus_campaign(settings)
    set_state(
        settings,
        ids["alan-read"],
        ItemState.DONE,
        decision="revoke",
        comment='=HYPERLINK("http://evil.example","click")',
        decided_by="linus@example.com",
        decided_at=ENDED,
        outcome="revoked",
        acted_at=ENDED,
        proof={"audit_event": 42, "audit_action": "grant.revoked", "ended_at": "2026-03-10T12:00:00Z"},
    )
    set_state(settings, ids["barbara-write"], ItemState.DONE, decision="keep", by_default=True, outcome="kept")
    with session_scope(settings.db_url) as session:
        append_audit(session, [AuditEntry(actor="lapse", action="review.started", target=CAMPAIGN)])
    async with client(offline_app(settings)) as http:
        response = await http.get(f"/api/reviews/campaigns/{CAMPAIGN}/report.csv", headers=ADA)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        text = response.text
        ok, digest = check_report(text)
        assert ok and len(digest) == 64
        rows = list(csv.reader(io.StringIO(text, newline="")))
        meta = {row[0]: row[1:] for row in rows if len(row) >= 2}
        assert meta["campaign"] == [CAMPAIGN] and meta["default_decision"] == ["keep"]
        assert meta["reviewers_rule"] == ["manager"] and meta["fallback_rule"] == ["user:ada@example.com"]
        header = rows.index(next(r for r in rows if r and r[0] == "item"))
        items = [dict(zip(rows[header], row, strict=True)) for row in rows[header + 1 : -1]]
        assert len(items) == 6
        alan = next(i for i in items if i["item"] == str(ids["alan-read"]))
        assert (alan["decision"], alan["outcome"], alan["decided_by"]) == ("revoke", "revoked", "linus@example.com")
        assert alan["comment"].startswith("'=HYPERLINK")  # shown as text, never run
        assert (alan["revoke_audit_event"], alan["grant_ended_at"]) == ("42", "2026-03-10T12:00:00Z")
        assert alan["last_used"] == "unknown"
        barbara = next(i for i in items if i["item"] == str(ids["barbara-write"]))
        assert (barbara["decision"], barbara["by_default"]) == ("keep", "yes")
        # The head named is the chain's head before the report's own event, which records the same digest.
        with session_scope(settings.db_url, write=False) as session:
            events = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))
            campaign = session.get(ReviewCampaign, CAMPAIGN)
        made = events[-1]
        assert (made.action, made.target, made.details["sha256"]) == ("review.report", CAMPAIGN, digest)
        before = events[-2]
        assert meta["audit_chain_head"] == [f"{before.id}:{before.hash}"] == [made.details["audit_chain_head"]]
        assert campaign is not None and campaign.audit_head == meta["audit_chain_head"][0]
        # One changed byte, and the digest no longer matches.
        assert not check_report(text.replace("revoked", "kept", 1))[0]
        missing = await http.get("/api/reviews/campaigns/nope-20260101T000000/report.csv", headers=ADA)
        assert missing.status_code == 404
