"""Dead-lettering blames an instance only for deaths it is known to have caused.

``crashes`` counts the deaths of a worker while this instance's handler was running (a suspect
from the first one on: it then runs alone); ``lease_alone`` marks a lease whose holder runs
nothing else, so a death under it is this instance's doing and counts in ``recoveries``.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sm_instance") as batch:
        batch.add_column(sa.Column("crashes", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("lease_alone", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sm_instance") as batch:
        batch.drop_column("lease_alone")
        batch.drop_column("crashes")
