"""approvals: one row per (pending decision, person who may decide it), indexed for an approver's inbox

The upgrade fills the inbox from the requests already open (pending, or active with an extension awaiting a
decision), from each one's recorded status, so no decision waiting before it goes missing from a list.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from pydantic import ValidationError

import store.tables
from access.requests import RequestStatus
from store.approval_inbox import deciders

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
    sa.column("created_at", store.tables.UTCDateTime(timezone=True)),
    sa.column("status", sa.JSON()),
)


def upgrade() -> None:
    inbox = op.create_table(
        "approvalinbox",
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("approver", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", store.tables.UTCDateTime(timezone=True), nullable=False),
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
            try:
                status = RequestStatus.model_validate(recorded)
            except ValidationError:
                continue  # a status no model reads is no open decision: its workflow records the next one
            rows += [{"request_id": request_id, "approver": p, "created_at": created_at} for p in deciders(status)]
        if rows:
            connection.execute(sa.insert(inbox), rows)
        last = batch[-1][0]


def downgrade() -> None:
    op.drop_index("ix_approvalinbox_approver_order", table_name="approvalinbox")
    op.drop_table("approvalinbox")
