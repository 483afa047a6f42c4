"""Flow control: an instance's priority (claimed higher first) and its concurrency key (its slot
group, computed at start), with the index that counts a key's running instances; the per-key
limit is stored with the workflow, beside ``max_concurrent``.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sm_instance", sa.Column("priority", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("sm_instance", sa.Column("concurrency_key", sa.String(200), nullable=True))
    op.create_index(
        "ix_sm_instance_key", "sm_instance", ["concurrency_key", "workflow_name", "status"]
    )
    op.add_column("sm_workflow", sa.Column("key_limit", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sm_workflow") as batch:
        batch.drop_column("key_limit")
    op.drop_index("ix_sm_instance_key", "sm_instance")
    with op.batch_alter_table("sm_instance") as batch:
        batch.drop_column("concurrency_key")
        batch.drop_column("priority")
