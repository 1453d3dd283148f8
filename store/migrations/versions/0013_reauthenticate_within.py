"""approval workflows may ask for a recent sign-in to decide, extend or revoke (reauthenticate_within)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvalworkflow", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reauthenticate_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvalworkflow", schema=None) as batch_op:
        batch_op.drop_column("reauthenticate_seconds")
