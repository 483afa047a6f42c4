"""The index that counts the instances holding a concurrency slot: ``(workflow_name,
concurrency_key)`` over started instances only (a partial index), in place of 0008's
``(concurrency_key, workflow_name, status)``. Claiming a pending instance counts its key's
started instances; on the old index (or on ``ix_sm_instance_wf_status``, which the planner
took when its statistics were older than the backlog) that count read every started instance
of the workflow, for each candidate, and a claim with keys was several times slower.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# the statuses that hold a slot when this revision was written (tables.HOLDS_SLOT)
HOLDS_SLOT = "status IN ('compensating', 'paused', 'running', 'waiting')"


def upgrade() -> None:
    op.create_index(
        "ix_sm_instance_slots",
        "sm_instance",
        ["workflow_name", "concurrency_key"],
        postgresql_where=sa.text(HOLDS_SLOT),
        sqlite_where=sa.text(HOLDS_SLOT),
    )
    op.drop_index("ix_sm_instance_key", "sm_instance")


def downgrade() -> None:
    op.create_index(
        "ix_sm_instance_key", "sm_instance", ["concurrency_key", "workflow_name", "status"]
    )
    op.drop_index("ix_sm_instance_slots", "sm_instance")
