"""The store's typed records: what the runtime hands it to write and what it reads back.

The bottom of ``store``: the writer, the repository and the runner all use these, and this
module imports none of them, so no two store modules need each other.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from statemachine import records


class Keep(enum.Enum):
    """The type of ``KEEP``: a column a transition leaves as stored."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass
class InstanceRecord:
    """An instance row as the runtime needs it (state and lease included)."""

    id: str
    workflow_name: str
    workflow_version: str
    definition_hash: str
    status: str
    current_step: str | None
    input: Any
    output: Any
    error: Any
    metadata: dict[str, Any]
    state: dict[str, Any]
    parent_id: str | None
    wake_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_epoch: int
    recoveries: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    history_seq: int = 0  # grows with every transition: a control call's compare-and-set
    crashes: int = 0  # deaths of a worker while its handler ran: a suspect from one on
    lease_alone: bool = False  # its lease's holder runs nothing else meanwhile
    priority: int = 0  # claimed before lower ones
    concurrency_key: str | None = None  # its slot group under the workflow's key limit


@dataclass
class StepWrite:
    path: str
    status: str
    input: Any = None
    output: Any = None
    error: Any = None
    attempts: int = 0
    iteration: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass
class HistoryWrite:
    type: str
    step: str | None
    data: dict[str, Any]
    at: datetime


@dataclass
class NewInstance:
    """An instance to insert: its row, its first history, and the record the runtime uses.
    ``execute`` hands it to the run's first transition, so birth and start are one commit."""

    values: dict[str, Any]
    history: list[HistoryWrite]
    record: InstanceRecord


@dataclass(slots=True)
class Columns:
    """The instance columns a transition sets; ``KEEP`` leaves one as stored. A column left out
    of the UPDATE also leaves its index pages alone, so a runner keeps what it knows is stored."""

    status: str | Keep = KEEP
    state: dict[str, Any] | Keep = KEEP
    current_step: str | Keep | None = KEEP
    output: Any = KEEP
    error: Any = KEEP
    wake_at: datetime | Keep | None = KEEP
    started_at: datetime | Keep | None = KEEP
    completed_at: datetime | Keep | None = KEEP
    updated_at: datetime | Keep = KEEP
    recoveries: int | Keep = KEEP
    crashes: int | Keep = KEEP
    #: the lease extended to then (a commit is a heartbeat too); None gives it up (the end)
    lease_expires_at: datetime | Keep | None = KEEP
    #: the version it runs: changed only by a migration (``engine.migration``)
    workflow_version: str | Keep = KEEP
    definition_hash: str | Keep = KEEP

    def changed(self) -> list[tuple[str, Any]]:
        """(column, value) of each column set, in a fixed order: one statement per shape."""
        return [(name, v) for name in COLUMN_NAMES if (v := getattr(self, name)) is not KEEP]


COLUMN_NAMES: Final = tuple(f.name for f in fields(Columns))


@dataclass
class Transition:
    """Everything one step of progress changes, committed together or not at all."""

    instance_id: str
    epoch: int | None  # None: not fenced (control calls made without a lease)
    columns: Columns = field(default_factory=Columns)
    steps: list[StepWrite] = field(default_factory=list)
    history: list[HistoryWrite] = field(default_factory=list)
    consume_events: list[int] = field(default_factory=list)
    notify: list[tuple[str, str, Any]] = field(default_factory=list)  # (instance, event, data)
    expect_status: Sequence[str] | None = None  # only apply while the status is one of these
    expect_seq: int | None = None  # only apply while ``history_seq`` is this (nothing happened)
    abort_if_paused: bool = False  # change nothing if a pause landed meanwhile (re-decide)
    fence: bool = False  # take the lease from whoever holds it: their next commit fails
    create: NewInstance | None = None  # insert this instance first, in the same commit
    drop_steps: list[str] = field(
        default_factory=list
    )  # step rows to delete (a migration's renames)


class InstancePaused(Exception):
    """Internal: a runner's transition met a pause; nothing was written."""


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: Any
    received_at: datetime


@dataclass(frozen=True)
class FeedEntry:
    """A history entry with its cursor and instance, as the event feed reads it."""

    cursor: int
    instance_id: str
    workflow_name: str
    entry: records.HistoryEntry
