"""sign-in: browser sessions and API tokens (each kept only as a SHA-256), and service accounts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="person")
        )
    op.create_table(
        "websession",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("auth_time", store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ended_at", store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_websession_email"), "websession", ["email"], unique=False)
    op.create_table(
        "apitoken",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expires_at", store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index(op.f("ix_apitoken_owner"), "apitoken", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_apitoken_owner"), table_name="apitoken")
    op.drop_table("apitoken")
    op.drop_index(op.f("ix_websession_email"), table_name="websession")
    op.drop_table("websession")
    # Before 0009 every user is a person who may sign in: a service account must not become one.
    op.execute(sa.text("UPDATE \"user\" SET active = false WHERE kind = 'service'"))
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("kind")
