"""break-glass requests and their post-hoc review

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_UTC = store.tables.UTCDateTime


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no table; None means the role allows no emergency access.
    with op.batch_alter_table("role", schema=None) as batch_op:
        batch_op.add_column(sa.Column("break_glass", sa.JSON(), nullable=True))
    op.create_table(
        "breakglassreview",
        sa.Column("request_id", _TEXT(), nullable=False),
        sa.Column("requester", _TEXT(), nullable=False),
        sa.Column("role", _TEXT(), nullable=False),
        sa.Column("justification", _TEXT(), nullable=False),
        sa.Column("state", _TEXT(), nullable=False),
        sa.Column("opened_at", _UTC(timezone=True), nullable=False),
        sa.Column("deadline", _UTC(timezone=True), nullable=False),
        sa.Column("reviewers", sa.JSON(), nullable=False),
        sa.Column("notify", sa.JSON(), nullable=False),
        sa.Column("escalated_to", sa.JSON(), nullable=False),
        sa.Column("expires_at", _UTC(timezone=True), nullable=True),
        sa.Column("decided_by", _TEXT(), nullable=True),
        sa.Column("decided_at", _UTC(timezone=True), nullable=True),
        sa.Column("comment", _TEXT(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("breakglassreview", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breakglassreview_requester"), ["requester"], unique=False)
        batch_op.create_index(batch_op.f("ix_breakglassreview_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("breakglassreview", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_breakglassreview_state"))
        batch_op.drop_index(batch_op.f("ix_breakglassreview_requester"))
    op.drop_table("breakglassreview")
    with op.batch_alter_table("role", schema=None) as batch_op:
        batch_op.drop_column("break_glass")
