"""Inbox event names up to 256 characters: a child's notice to its parent is named
``child:{child id}``, six characters longer than the longest instance id (200).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR's length: only Postgres needs the column widened (and
    # on SQLite, altering a column would copy the whole table)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("sm_event", "name", type_=sa.String(256), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("sm_event", "name", type_=sa.String(200), existing_nullable=False)
