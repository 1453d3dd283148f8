"""emergency requests being started, one per person and role across API processes

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 08:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_UTC = store.tables.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "emergencystart",
        sa.Column("requester", _TEXT(), nullable=False),
        sa.Column("role", _TEXT(), nullable=False),
        sa.Column("request_id", _TEXT(), nullable=False),
        sa.Column("started_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("requester", "role"),
    )


def downgrade() -> None:
    op.drop_table("emergencystart")
