"""Schedules: one row per schedule of a workflow (``sm_schedule``), shared by every engine.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sm_schedule",
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("spec", sa.JSON, nullable=True),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_instance", sa.String(200), nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sm_schedule_next_at", "sm_schedule", ["next_at"])


def downgrade() -> None:
    op.drop_index("ix_sm_schedule_next_at", "sm_schedule")
    op.drop_table("sm_schedule")
