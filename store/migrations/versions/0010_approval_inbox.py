"""approvals: one row per (pending decision, person who may decide it), indexed for an approver's inbox

The upgrade fills the inbox from the requests already open (pending, or active with an extension awaiting a
decision), from each one's recorded status, so no decision waiting before it goes missing from a list.

Self-contained (the standard library, SQLAlchemy and Alembic only): who may decide is read from the recorded
status by a copy of the rule as it stood when this migration was written, so that a later change to Lapse's
code (``store.approval_inbox.deciders``, the status models) cannot change what this migration does.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
"""Requests read (and their rows written) at a time, so a large app DB is filled in bounded memory."""

_requests = sa.table(
    "accessrequest",
    sa.column("id", sa.String()),
    sa.column("state", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("status", sa.JSON()),
)


def upgrade() -> None:
    inbox = op.create_table(
        "approvalinbox",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("approver", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "approver"),
    )
    op.create_index(
        "ix_approvalinbox_approver_order", "approvalinbox", ["approver", "created_at", "request_id"], unique=False
    )
    _fill(inbox)


def _fill(inbox: sa.Table) -> None:
    """One row per person who may decide each open request now, as ``store.approval_inbox`` keeps them."""
    connection = op.get_bind()
    last = ""
    while True:
        batch = connection.execute(
            sa.select(_requests.c.id, _requests.c.created_at, _requests.c.status)
            .where(_requests.c.state.in_(("pending", "active")), _requests.c.id > last)
            .order_by(_requests.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        rows = []
        for request_id, created_at, recorded in batch:
            # The time is copied as stored: UTC on both app DBs (SQLite's without its zone, as Lapse reads it).
            rows += [{"request_id": request_id, "approver": p, "created_at": created_at} for p in _deciders(recorded)]
        if rows:
            connection.execute(sa.insert(inbox), rows)
        last = batch[-1][0]


def _deciders(status: Any) -> list[str]:
    """Who may decide the open round of a recorded status (its own step while pending, a pending extension's
    while active): the open step's eligible people, less the requester, those who decided the step already
    and, with distinct approvers, those who approved another step of the round. None for a status that is not
    one (its workflow records the next one). A frozen copy of ``store.approval_inbox.deciders`` as of 0010."""
    try:
        steps = _open_round(status)
        step = next((s for s in steps if s.get("state", "waiting") == "open"), None)
        if step is None:
            return []
        decisions = step.get("decisions", [])
        if sum(1 for d in decisions if d["approved"]) >= step["quorum"]:
            return []  # its quorum is met: the next step is being resolved
        excluded = {status["requester"], *(d["approver"] for d in decisions)}
        if status.get("distinct_approvers", True):
            excluded |= {d["approver"] for s in steps if s is not step for d in s.get("decisions", []) if d["approved"]}
        people = step["eligible"]
        if not all(isinstance(p, str) for p in people):
            return []
        return sorted(set(people) - excluded)
    except (KeyError, TypeError, AttributeError):
        return []


def _open_round(status: Any) -> list[dict[str, Any]]:
    """The steps of the round open to decisions: the request's own while pending, a pending extension's while
    active; none otherwise."""
    state = status.get("state", "pending")
    if state == "pending":
        return list(status.get("steps", []))
    extensions = status.get("extensions", [])
    if state == "active" and extensions and extensions[-1].get("state", "pending") == "pending":
        return list(extensions[-1].get("steps", []))
    return []


def downgrade() -> None:
    op.drop_index("ix_approvalinbox_approver_order", table_name="approvalinbox")
    op.drop_table("approvalinbox")
