"""requests remember the last bookkeeping step recorded, so a replayed step writes no audit event twice

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:25:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accessrequest", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recorded_seq", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "requeststep",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("requeststep")
    with op.batch_alter_table("accessrequest", schema=None) as batch_op:
        batch_op.drop_column("recorded_seq")
