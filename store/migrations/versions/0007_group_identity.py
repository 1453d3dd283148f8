"""groups (and users) are identified by source and external id, not by name

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00.000000

Group names stop being unique: each source has its own groups, keyed by ``(source, external_id)``
(the organisation file's groups by name, which stays unique among them). The file's existing groups
get their name as external id; a directory's existing groups keep none until the next directory sync
adopts them by name. A group the directory had taken over from the organisation file by name stays the
directory's: `lapse load-org` makes the file's own group again, which the directory never touches.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("group", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.drop_index("ix_group_name")
        batch_op.create_index("ix_group_name", ["name"], unique=False)
    op.execute("UPDATE \"group\" SET external_id = name WHERE source = 'file'")
    with op.batch_alter_table("group", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_group_source_external_id", ["source", "external_id"])
        batch_op.create_index(
            "uq_group_file_name",
            ["name"],
            unique=True,
            sqlite_where=sa.text("source = 'file'"),
            postgresql_where=sa.text("source = 'file'"),
        )


def downgrade() -> None:
    # Fails (the unique index on name) while two sources have groups of one name: merge or rename them first.
    with op.batch_alter_table("group", schema=None) as batch_op:
        batch_op.drop_index("uq_group_file_name")
        batch_op.drop_constraint("uq_group_source_external_id", type_="unique")
        batch_op.drop_index("ix_group_name")
        batch_op.create_index("ix_group_name", ["name"], unique=True)
        batch_op.drop_column("external_id")
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("external_id")
