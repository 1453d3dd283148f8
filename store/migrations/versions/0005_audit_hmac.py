"""audit events record the id of the key their HMAC was made with

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:30:00.000000

Events written before this revision keep ``key_id = ''``: they were chained with an unkeyed SHA-256,
which anyone who could write the DB could recompute. They are not re-MACed (no key is at hand here, and
re-MACing would vouch for whatever they hold now); ``verify`` checks them as a legacy prefix and says
so, and the first keyed event, whose MAC covers the last legacy hash, anchors them from then on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.drop_column("key_id")
