"""The schema, as SQLModel tables. Private to ``store``: the rest of the package sees records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Index, Table, Text, text
from sqlmodel import Field, SQLModel

from statemachine.vocabulary import STARTED

metadata = SQLModel.metadata

# Lengths of the text columns users' values go into. The engine checks values against them
# before writing (Postgres refuses a longer value, SQLite keeps it): the same error on both.
ID_LENGTH = 200  # an instance id, a worker id, an event name
NAME_LENGTH = 200  # a workflow's name, an event's type in history
VERSION_LENGTH = 100
PATH_LENGTH = 500  # a step's path: its name under every branch and map item that holds it
EVENT_NAME_LENGTH = 256  # inbox events: a user's name (ID_LENGTH) or "child:{child id}"

#: the condition of ``ix_sm_instance_slots``; queries counting slots must say it word for word
#: (``slots.holding_slot``): a database uses a partial index only for a condition it can see
#: implies the index's own, and a list of bound parameters is not one it can see into
HOLDS_SLOT = f"status IN ({', '.join(repr(str(s)) for s in sorted(STARTED))})"


def _ts(index: bool = False, nullable: bool = True) -> datetime | None:
    """A timezone-aware timestamp column (stored as UTC)."""
    column = Column(DateTime(timezone=True), index=index, nullable=nullable)
    return Field(default=None, sa_column=column)  # type: ignore[no-any-return]


class DefinitionRow(SQLModel, table=True):
    __tablename__ = "sm_definition"
    hash: str = Field(primary_key=True, max_length=64)
    name: str = Field(index=True, max_length=200)
    version: str = Field(max_length=100)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime | None = _ts()
    retired_at: datetime | None = _ts()  # unregistered: no new instances of this version


class InstanceRow(SQLModel, table=True):
    __tablename__ = "sm_instance"
    __table_args__ = (
        Index("ix_sm_instance_due", "status", "wake_at"),
        Index("ix_sm_instance_wf_status", "workflow_name", "status"),
        # counting the instances that hold a slot (a workflow's, a key's) when claiming a
        # pending one: started ones only, so the count reads a few entries, never the backlog
        Index(
            "ix_sm_instance_slots",
            "workflow_name",
            "concurrency_key",
            postgresql_where=text(HOLDS_SLOT),
            sqlite_where=text(HOLDS_SLOT),
        ),
    )
    id: str = Field(primary_key=True, max_length=200)
    workflow_name: str = Field(max_length=200)
    workflow_version: str = Field(max_length=100)
    definition_hash: str = Field(max_length=64)
    status: str = Field(max_length=20)
    current_step: str | None = Field(default=None, max_length=500)
    input: object = Field(default=None, sa_column=Column(JSON))
    output: object = Field(default=None, sa_column=Column(JSON))
    error: object = Field(default=None, sa_column=Column(JSON))
    meta: object = Field(default=None, sa_column=Column("metadata", JSON))
    state: object = Field(default=None, sa_column=Column(JSON))
    parent_id: str | None = Field(default=None, max_length=200, index=True)
    wake_at: datetime | None = _ts()
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _ts()
    lease_epoch: int = 0
    recoveries: int = 0  # deaths this instance caused: dead-lettered past max_recoveries
    crashes: int = 0  # deaths while its handler ran, alone or not: a suspect runs alone
    lease_alone: bool = False  # the lease's holder runs nothing else (see worker.work)
    priority: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # higher first
    # its slot group under the workflow's ``key_limit``, computed at start; None: no key limit
    concurrency_key: str | None = Field(default=None, max_length=200)
    history_seq: int = 0
    created_at: datetime | None = _ts(index=True)
    started_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    updated_at: datetime | None = _ts()


class StepRow(SQLModel, table=True):
    __tablename__ = "sm_step"
    instance_id: str = Field(primary_key=True, max_length=200)
    path: str = Field(primary_key=True, max_length=500)
    status: str = Field(max_length=20)
    input: object = Field(default=None, sa_column=Column(JSON))
    output: object = Field(default=None, sa_column=Column(JSON))
    error: object = Field(default=None, sa_column=Column(JSON))
    attempts: int = 0
    iteration: int = 0
    started_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    next_attempt_at: datetime | None = _ts()


class HistoryRow(SQLModel, table=True):
    __tablename__ = "sm_history"
    instance_id: str = Field(primary_key=True, max_length=200)
    seq: int = Field(primary_key=True)
    at: datetime | None = _ts()
    type: str = Field(max_length=200)
    step: str | None = Field(default=None, max_length=500)
    data: object = Field(default=None, sa_column=Column(JSON))


class EventRow(SQLModel, table=True):
    __tablename__ = "sm_event"
    __table_args__ = (Index("ix_sm_event_pending", "instance_id", "consumed_at"),)
    id: int | None = Field(default=None, primary_key=True)
    instance_id: str = Field(max_length=200)
    name: str = Field(max_length=EVENT_NAME_LENGTH)
    data: object = Field(default=None, sa_column=Column(JSON))
    received_at: datetime | None = _ts()
    consumed_at: datetime | None = _ts()


class WorkflowRow(SQLModel, table=True):
    """Settings of a workflow by name, whatever its version: shared by every engine."""

    __tablename__ = "sm_workflow"
    name: str = Field(primary_key=True, max_length=200)
    max_concurrent: int | None = Field(default=None)
    key_limit: int | None = Field(default=None)  # running instances per concurrency_key
    updated_at: datetime | None = _ts()


class ScheduleRow(SQLModel, table=True):
    """One schedule of a workflow (by its place in the definition): when it fires next, and
    the version it starts. Every engine fires from this row, claiming a tick by moving
    ``next_at`` on (compare-and-set) in the transaction that inserts the tick's instance."""

    __tablename__ = "sm_schedule"
    workflow: str = Field(primary_key=True, max_length=200)
    idx: int = Field(primary_key=True)
    spec: object = Field(default=None, sa_column=Column(JSON))  # the Schedule, as YAML has it
    timezone: str = Field(max_length=100)
    definition_hash: str = Field(max_length=64)
    next_at: datetime | None = _ts(index=True)
    last_at: datetime | None = _ts()
    last_instance: str | None = Field(default=None, max_length=200)
    paused: bool = False
    updated_at: datetime | None = _ts()


# The tables themselves, for queries: one name each, read wherever SQL is written
DEFINITION: Table = DefinitionRow.__table__  # type: ignore[attr-defined]
INSTANCE: Table = InstanceRow.__table__  # type: ignore[attr-defined]
STEP: Table = StepRow.__table__  # type: ignore[attr-defined]
HISTORY: Table = HistoryRow.__table__  # type: ignore[attr-defined]
EVENT: Table = EventRow.__table__  # type: ignore[attr-defined]
WORKFLOW: Table = WorkflowRow.__table__  # type: ignore[attr-defined]


class EmitKeyRow(SQLModel, table=True):
    """An ``emit`` with an idempotency key: the ids it started, returned to the same key again."""

    __tablename__ = "sm_emit_key"
    event: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=200)
    ids: object = Field(default=None, sa_column=Column(JSON))
    created_at: datetime | None = _ts(index=True)  # ``prune`` forgets keys older than its cutoff


class ActionLimitRow(SQLModel, table=True):
    """``limit_action``: one row per action, locked while a call of it is admitted."""

    __tablename__ = "sm_action_limit"
    action: str = Field(primary_key=True, max_length=200)
    rate: int | None = Field(default=None)  # at most this many calls started...
    per: float | None = Field(default=None)  # ...in any window of this many seconds
    concurrency: int | None = Field(default=None)  # at most this many calls running at once
    updated_at: datetime | None = _ts()


class ActionCallRow(SQLModel, table=True):
    """A call of a limited action: its start counts against the rate until it leaves the
    window; while ``running``, it holds a concurrency slot, alive as long as the lease epoch
    it was taken under is the instance's live lease (a crash gives the slot back)."""

    __tablename__ = "sm_action_call"
    __table_args__ = (Index("ix_sm_action_call_at", "action", "started_at"),)
    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=200)
    started_at: datetime | None = _ts()
    instance_id: str = Field(max_length=200)
    path: str = Field(max_length=500)
    epoch: int = 0
    running: bool = False


EMIT_KEY: Table = EmitKeyRow.__table__  # type: ignore[attr-defined]
ACTION_LIMIT: Table = ActionLimitRow.__table__  # type: ignore[attr-defined]
ACTION_CALL: Table = ActionCallRow.__table__  # type: ignore[attr-defined]
SCHEDULE: Table = ScheduleRow.__table__  # type: ignore[attr-defined]
