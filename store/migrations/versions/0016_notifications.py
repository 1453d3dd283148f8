"""the notification outbox, per-user channel preferences, chat identities, and whole org-file sections

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.tables

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_UTC = store.tables.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _TEXT(length=512), nullable=False),
        sa.Column("channel", _TEXT(), nullable=False),
        sa.Column("target", _TEXT(), nullable=False),
        sa.Column("kind", _TEXT(), nullable=False),
        sa.Column("recipient", _TEXT(), nullable=True),
        sa.Column("subject", _TEXT(), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("state", _TEXT(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", _UTC(timezone=True), nullable=False),
        sa.Column("claimed_until", _UTC(timezone=True), nullable=True),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.Column("sent_at", _UTC(timezone=True), nullable=True),
        sa.Column("error", _TEXT(), nullable=True),
        sa.Column("ref", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index("ix_notification_due", ["state", "due_at", "id"], unique=False)
        batch_op.create_index("ix_notification_subject", ["subject", "recipient", "kind"], unique=False)

    op.create_table(
        "notificationpreference",
        sa.Column("user_email", _TEXT(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("updated_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_email"),
    )
    op.create_table(
        "chatidentity",
        sa.Column("user_email", _TEXT(), nullable=False),
        sa.Column("channel", _TEXT(), nullable=False),
        sa.Column("external_id", _TEXT(), nullable=False),
        sa.Column("looked_up_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_email", "channel"),
        sa.UniqueConstraint("channel", "external_id", name="uq_chatidentity_external"),
    )
    op.create_table(
        "orgsection",
        sa.Column("name", _TEXT(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("updated_by", _TEXT(), nullable=False),
        sa.Column("updated_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("orgsection")
    op.drop_table("chatidentity")
    op.drop_table("notificationpreference")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_subject")
        batch_op.drop_index("ix_notification_due")
    op.drop_table("notification")
