"""grant phases: claim, call the target outside any transaction, record; an index for the expiry backstop

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('grant', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default='held')
        )
        batch_op.add_column(sa.Column('phase_at', store.tables.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_grant_active_expires_at', ['active', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('grant', schema=None) as batch_op:
        batch_op.drop_index('ix_grant_active_expires_at')
        batch_op.drop_column('phase_at')
        batch_op.drop_column('phase')
