"""The initial schema: definitions, instances, step results, history, event inbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, index: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True, index=index)


def upgrade() -> None:
    op.create_table(
        "sm_definition",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "sm_instance",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("workflow_name", sa.String(200), nullable=False),
        sa.Column("workflow_version", sa.String(100), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("current_step", sa.String(500)),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("metadata", sa.JSON),
        sa.Column("state", sa.JSON),
        sa.Column("parent_id", sa.String(200), index=True),
        _ts("wake_at"),
        sa.Column("lease_owner", sa.String(200)),
        _ts("lease_expires_at"),
        sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("history_seq", sa.Integer, nullable=False, server_default="0"),
        _ts("created_at", index=True),
        _ts("started_at"),
        _ts("completed_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_sm_instance_due", "sm_instance", ["status", "wake_at"])
    op.create_index("ix_sm_instance_wf_status", "sm_instance", ["workflow_name", "status"])
    op.create_table(
        "sm_step",
        sa.Column("instance_id", sa.String(200), primary_key=True),
        sa.Column("path", sa.String(500), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("iteration", sa.Integer, nullable=False, server_default="0"),
        _ts("started_at"),
        _ts("completed_at"),
        _ts("next_attempt_at"),
    )
    op.create_table(
        "sm_history",
        sa.Column("instance_id", sa.String(200), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        _ts("at"),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("step", sa.String(500)),
        sa.Column("data", sa.JSON),
    )
    op.create_table(
        "sm_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON),
        _ts("received_at"),
        _ts("consumed_at"),
    )
    op.create_index("ix_sm_event_pending", "sm_event", ["instance_id", "consumed_at"])


def downgrade() -> None:
    for table in ("sm_event", "sm_history", "sm_step", "sm_instance", "sm_definition"):
        op.drop_table(table)
