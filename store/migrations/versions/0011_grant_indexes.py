"""the permissions page: indexes for its filters and sort orders over the grants ledger

Over active grants only (partial indexes): each sort key of the permissions table (since, until, user, role)
with the grant id that breaks ties, alone, after the path, and after the role and path; so that a page under any
filters is one index range (store/grant_pages.py). And over the active grants that end, each other sort key with
the end beside it, for "expiring before" under another order.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = ("granted_at", "expires_at", "user_email", "role")
HELD: dict[str, Any] = {"sqlite_where": sa.text("active IS NOT 0"), "postgresql_where": sa.text("active")}
"""As ``store.tables.HELD`` is today (a migration keeps its own copy: the code may change)."""
INDEXES = {
    **{f"ix_grant_held_{key}": [key, "id"] for key in KEYS},
    **{f"ix_grant_held_path_{key}": ["path", key, "id"] for key in KEYS},
    **{f"ix_grant_held_role_path_{key}": ["role", "path", key, "id"] for key in KEYS[:3]},
    "ix_grant_held_role_path": ["role", "path", "id"],
}


ENDING: dict[str, Any] = {
    "sqlite_where": sa.text("active IS NOT 0 AND expires_at IS NOT NULL"),
    "postgresql_where": sa.text("active AND expires_at IS NOT NULL"),
}
ENDING_INDEXES = {f"ix_grant_ending_{key}": [key, "id", "expires_at"] for key in ("granted_at", "user_email", "role")}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "grant", columns, **HELD)
    for name, columns in ENDING_INDEXES.items():
        op.create_index(name, "grant", columns, **ENDING)


def downgrade() -> None:
    for name in [*reversed(ENDING_INDEXES), *reversed(INDEXES)]:
        op.drop_index(name, table_name="grant")
