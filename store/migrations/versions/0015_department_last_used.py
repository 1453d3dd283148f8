"""users carry a department; grants carry when they were last seen in use

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both nullable with no default: adding them rewrites neither table (no copy of a large grants ledger).
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("department", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", store.tables.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("department")
