"""credentials: the one-time logins of ephemeral grants, sealed until their requester fetches them

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 12:54:37.526753
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('credential',
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('username', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('ciphertext', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('dsn_hint', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('expires_at', store.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('shown_at', store.tables.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('request_id')
    )


def downgrade() -> None:
    op.drop_table('credential')
