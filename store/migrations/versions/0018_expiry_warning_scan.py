"""the end a grant's holder was last warned of, for the warning scan

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 11:30:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import store.tables

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = store.tables.UTCDateTime


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no table.
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warned_for", _UTC(timezone=True), nullable=True))
    _carry_over_warnings()


def _carry_over_warnings() -> None:
    """Grants whose run warned its holder already (``RequestStatus.warned_for``, before the scan took the
    warnings over) keep that warning: the scan does not give it again."""
    bind = op.get_bind()
    grant = sa.table(
        "grant",
        sa.column("id", sa.Integer),
        sa.column("request_id", sa.String),
        sa.column("active", sa.Boolean),
        sa.column("expires_at", _UTC(timezone=True)),
        sa.column("warned_for", _UTC(timezone=True)),
    )
    request = sa.table("accessrequest", sa.column("id", sa.String), sa.column("status", sa.JSON))
    warned_for = request.c.status["warned_for"].as_string()
    # Only the one field of each status, read in SQL, and only for grants still to end: a status is the whole
    # request (its steps, decisions and extensions), and there may be a hundred thousand grants held.
    rows = bind.execute(
        sa.select(grant.c.id, grant.c.expires_at, warned_for)
        .join(request, request.c.id == grant.c.request_id)
        .where(grant.c.active.is_(True), grant.c.expires_at > datetime.now(UTC), warned_for.is_not(None))
    )
    warned = [
        {"grant_id": grant_id, "warned_for": expires_at}
        for grant_id, expires_at, text in rows
        if expires_at is not None and text and datetime.fromisoformat(text) == expires_at
    ]
    if warned:
        bind.execute(
            grant.update().where(grant.c.id == sa.bindparam("grant_id")).values(warned_for=sa.bindparam("warned_for")),
            warned,
        )


def downgrade() -> None:
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.drop_column("warned_for")
