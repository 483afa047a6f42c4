"""Idempotent emits (``sm_emit_key``) and limits per action (``sm_action_limit`` and the
calls that count against them, ``sm_action_call``).

Revision ID: 0009
Revises: 0008
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _ts(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.create_table(
        "sm_emit_key",
        sa.Column("event", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("ids", sa.JSON, nullable=True),
        _ts("created_at"),
    )
    op.create_index("ix_sm_emit_key_created_at", "sm_emit_key", ["created_at"])
    op.create_table(
        "sm_action_limit",
        sa.Column("action", sa.String(200), primary_key=True),
        sa.Column("rate", sa.Integer, nullable=True),
        sa.Column("per", sa.Float, nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        _ts("updated_at"),
    )
    op.create_table(
        "sm_action_call",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(200), nullable=False),
        _ts("started_at"),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("running", sa.Boolean, nullable=False),
    )
    op.create_index("ix_sm_action_call_at", "sm_action_call", ["action", "started_at"])


def downgrade() -> None:
    op.drop_table("sm_action_call")
    op.drop_table("sm_action_limit")
    op.drop_index("ix_sm_emit_key_created_at", "sm_emit_key")
    op.drop_table("sm_emit_key")
