"""A review campaign's report, for auditors: its scope and reviewers, then every item with its decision, who made it
and when, the comment, and for each revoke the proof it happened (the audit event of the revoke in the target,
and the grant's end).

One canonical form, CSV (every cell quoted, no cell starting a spreadsheet formula, as the audit export), whose
SHA-256 the report lists: the CSV's last line is the SHA-256 of every byte above it, and the printable HTML page
shows the same rows and the same SHA-256. Above the items, the report names the audit chain's head when it was
made; making it is itself an audit event (``review.report``, with the SHA-256), so an auditor holding the file can
check it against the log, whose chain they can verify (``GET /api/audit/verify``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from access.reviews import ReviewDefinition
from access.types import AuditEntry
from starter.services.audit import _cell as spreadsheet_text  # the audit export's formula neutraliser
from starter.services.authorization import require_admin
from starter.services.review_campaigns import find_campaign
from starter.services.review_items import Current, latest, with_current
from store.audit_log import append_audit
from store.db import session_scope
from store.settings import Settings
from store.tables import AuditEvent, ReviewCampaign, ReviewItem, User

BATCH = 1000
"""Items read per query: memory stays flat however large the campaign."""
DIGEST_LABEL = "sha256 of the lines above"
ITEM_COLUMNS = (
    "item",
    "user",
    "account",
    "role",
    "path",
    "granted_by",
    "since",
    "expires_at",
    "manager",
    "department",
    "holder_active",
    "last_used",
    "reviewer",
    "escalated",
    "state",
    "decision",
    "by_default",
    "decided_by",
    "decided_at",
    "comment",
    "outcome",
    "acted_at",
    "revoke_audit_event",
    "grant_ended_at",
    "error",
)


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else ""


def audit_head(session: Session) -> str:
    """The audit chain's head now: ``<sequence number>:<MAC>`` of its last event (empty log: ``0:``)."""
    last = session.exec(select(AuditEvent.id, AuditEvent.hash).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    return f"{last[0]}:{last[1]}" if last else "0:"


def _proof(proof: dict[str, Any]) -> tuple[str, str]:
    """The revoke's audit event and the grant's end, as the campaign's workflow records them."""
    event, ended = proof.get("audit_event"), proof.get("ended_at")
    return str(event if event is not None else ""), str(ended if ended is not None else "")


def _granted_by(item: ReviewItem) -> str:
    if item.request_id:
        return f"request {item.request_id}" + (f": {item.justification}" if item.justification else "")
    if item.policy:
        return f"policy {item.policy}"
    return "found in the target"


def item_row(item: ReviewItem, now: Current = Current()) -> list[str]:
    """One item's row; the holder's department as their source says now, the last use as the item shows it."""
    event, ended = _proof(item.proof)
    return [
        str(item.id),
        item.user_email or "",
        item.account,
        item.role,
        item.path,
        _granted_by(item),
        _time(item.granted_at),
        _time(item.expires_at),
        item.manager_email or "",
        now.department or "",
        "yes" if item.holder_active else "no",
        _time(latest(item.last_used, now.used)) or "unknown",
        item.reviewer,
        "yes" if item.escalated else "no",
        item.state,
        item.decision or "",
        "yes" if item.by_default else "no",
        item.decided_by or "",
        _time(item.decided_at),
        item.comment,
        item.outcome or "",
        _time(item.acted_at),
        event,
        ended,
        item.error or "",
    ]


def _heading(session: Session, campaign: ReviewCampaign, *, by: str, at: datetime, head: str) -> list[list[str]]:
    """The report's first rows: the campaign, its definition as it started, counts, reviewers, and when it was
    made, by whom, at which audit head."""
    definition = ReviewDefinition.model_validate(campaign.body)
    outcomes = session.exec(  # type: ignore[call-overload]
        select(ReviewItem.outcome, func.count())
        .where(ReviewItem.campaign_id == campaign.id)
        .group_by(ReviewItem.outcome)
        .order_by(ReviewItem.outcome)
    ).all()
    reviewers = session.exec(  # type: ignore[call-overload]
        select(ReviewItem.reviewer, func.count(), func.count(col(ReviewItem.decided_by)))
        .where(ReviewItem.campaign_id == campaign.id)
        .group_by(ReviewItem.reviewer)
        .order_by(ReviewItem.reviewer)
    ).all()
    scope = json.dumps(definition.scope.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
    rows = [
        ["Lapse access review report"],
        ["campaign", campaign.id],
        ["definition", campaign.definition],
        ["description", definition.description],
        ["state", campaign.state],
        ["started_by", campaign.started_by],
        ["started_at", _time(campaign.started_at)],
        ["deadline", _time(campaign.deadline)],
        ["escalation_deadline", _time(campaign.escalation_deadline)],
        ["closed_at", _time(campaign.closed_at)],
        ["closed_by", campaign.closed_by or ""],
        ["scope", scope],
        ["reviewers_rule", "; then ".join(a.describe() for a in definition.reviewers)],
        ["fallback_rule", "; then ".join(a.describe() for a in definition.fallback)],
        ["default_decision", definition.default.value],
        ["revokes", definition.revoke.value],
        ["items", str(campaign.items)],
        *[["outcome", outcome or "not acted on yet", str(n)] for outcome, n in outcomes],
        *[["reviewer", reviewer, f"{n} items", f"{decided} decided"] for reviewer, n, decided in reviewers],
        ["made_at", _time(at)],
        ["made_by", by],
        ["audit_chain_head", head],
        [],
        list(ITEM_COLUMNS),
    ]
    return rows


def _items(settings: Settings, campaign_id: str) -> Iterator[tuple[ReviewItem, Current]]:
    after = 0
    while True:
        with session_scope(settings.db_url, write=False) as session:
            batch = list(
                session.execute(  # rows, not scalars: the item and its ``Current``
                    with_current(select(ReviewItem))
                    .where(ReviewItem.campaign_id == campaign_id, col(ReviewItem.id) > after)
                    .order_by(col(ReviewItem.id))
                    .limit(BATCH)
                )
            )
        yield from ((item, Current(*now)) for item, *now in batch)
        if len(batch) < BATCH:
            return
        after = batch[-1][0].id or 0


class _Writer:
    """CSV text in pieces, hashed as it goes."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.csv = csv.writer(self.buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        self.digest = hashlib.sha256()

    def rows(self, rows: list[list[str]]) -> str:
        for row in rows:
            self.csv.writerow([spreadsheet_text(cell) for cell in row])
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        self.digest.update(text.encode())
        return text


def _record(settings: Settings, campaign_id: str, *, by: str, head: str, sha256: str, form: str, items: int) -> None:
    with session_scope(settings.db_url) as session:
        details = {"format": form, "sha256": sha256, "audit_chain_head": head, "items": items}
        append_audit(session, [AuditEntry(actor=by, action="review.report", target=campaign_id, details=details)])
        campaign = session.get(ReviewCampaign, campaign_id)
        if campaign is not None:
            campaign.audit_head = head
            session.add(campaign)


def _start(settings: Settings, campaign_id: str, by: str) -> tuple[datetime, str, list[list[str]]]:
    at = datetime.now(UTC)
    with session_scope(settings.db_url, write=False) as session:
        campaign = find_campaign(session, campaign_id)
        head = audit_head(session)
        return at, head, _heading(session, campaign, by=by, at=at, head=head)


def report_csv(settings: Settings, admin: User, campaign_id: str) -> Iterator[str]:
    """The report as CSV text in pieces to stream; its last line is the SHA-256 of everything above it, recorded
    in the audit log (``review.report``) once the last piece is made (admins)."""
    require_admin(admin)
    _, head, heading = _start(settings, campaign_id, admin.email)  # a refusal before any answer starts

    def pieces() -> Iterator[str]:
        writer = _Writer()
        yield writer.rows(heading)
        count, batch = 0, []
        for item, now in _items(settings, campaign_id):
            batch.append(item_row(item, now))
            count += 1
            if len(batch) == BATCH:
                yield writer.rows(batch)
                batch = []
        yield writer.rows(batch)
        sha256 = writer.digest.hexdigest()
        _record(settings, campaign_id, by=admin.email, head=head, sha256=sha256, form="csv", items=count)
        trailer = io.StringIO()
        csv.writer(trailer, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow([DIGEST_LABEL, sha256])
        yield trailer.getvalue()

    return pieces()


class PrintableReport(BaseModel):
    """The report as the printable page shows it: the same rows as the CSV, and the CSV's SHA-256."""

    campaign: str
    heading: list[list[str]]
    """The CSV's rows above the items (the last is the items' column names)."""
    items: list[list[str]]
    sha256: str
    """The SHA-256 the CSV made now would list: of its rows above the digest line."""
    audit_chain_head: str
    made_at: datetime
    made_by: str


def report_page(settings: Settings, admin: User, campaign_id: str) -> PrintableReport:
    """The report for the printable page, with the SHA-256 of its CSV form; recorded as ``review.report``."""
    require_admin(admin)
    at, head, heading = _start(settings, campaign_id, admin.email)
    writer = _Writer()
    writer.rows(heading)
    items = [item_row(item, now) for item, now in _items(settings, campaign_id)]
    for start in range(0, len(items), BATCH):
        writer.rows(items[start : start + BATCH])
    sha256 = writer.digest.hexdigest()
    _record(settings, campaign_id, by=admin.email, head=head, sha256=sha256, form="html", items=len(items))
    shown = [[spreadsheet_text(cell) for cell in row] for row in items]
    return PrintableReport(
        campaign=campaign_id,
        heading=[[spreadsheet_text(cell) for cell in row] for row in heading],
        items=shown,
        sha256=sha256,
        audit_chain_head=head,
        made_at=at,
        made_by=admin.email,
    )


def check_report(text: str) -> tuple[bool, str]:
    """Whether a report's CSV text still matches the SHA-256 on its last line; and that SHA-256."""
    body, _, last = text.rstrip("\r\n").rpartition("\r\n")
    row = next(csv.reader([last]), [])
    claimed = row[1] if len(row) == 2 and row[0] == DIGEST_LABEL else ""
    return hashlib.sha256((body + "\r\n").encode()).hexdigest() == claimed, claimed
