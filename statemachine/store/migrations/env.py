"""Alembic environment: always run programmatically by ``store.schema.upgrade`` on a live connection."""

from __future__ import annotations

from alembic import context

from statemachine.store import tables

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=tables.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
