"""Workflow settings shared by every engine: ``max_concurrent`` given to ``register``.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sm_workflow",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("max_concurrent", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sm_workflow")
