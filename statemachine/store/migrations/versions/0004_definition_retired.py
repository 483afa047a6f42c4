"""A definition can be unregistered (``engine.unregister``): ``retired_at`` marks a stored
version that no engine may start anymore; its running instances still load it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sm_definition", sa.Column("retired_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("sm_definition") as batch:
        batch.drop_column("retired_at")
