"""The persisted state of one instance as the interpreter sees it (plain, JSON-friendly data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from statemachine import records
from statemachine.runtime import jsondata
from statemachine.vocabulary import STEP_DONE, TERMINAL, InstanceStatus, Phase, StepStatus

__all__ = [
    "FINISHED",
    "MAP",
    "SETTLED",
    "TERMINAL",
    "State",
    "StepState",
    "StepView",
    "is_item_result",
]


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


MAP = "#map"  # a map's record among its items' records in ``State.branches``: items, next
# (states stored by the previous release, before an item's result had a record of its own,
# also hold ``results``)
FINISHED = STEP_DONE  # a step that will not run again
# a step no later decision reads ``StepState.extra`` of (a retry resumes failed and cancelled
# ones): left out of the state column, which would otherwise grow with every step
SETTLED: frozenset[StepStatus] = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})


def is_item_result(path: str) -> bool:
    """A map item's result (``map/iterator@i/``): kept as a step row, but not a step."""
    return path.endswith("/")


@dataclass
class StepState:
    path: str
    status: StepStatus = StepStatus.PENDING
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    iteration: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    wake_at: datetime | None = None  # next retry, poll, delay or timer
    phase: Phase = Phase.NONE
    event: str | None = None
    deadline: datetime | None = None
    prev: str | None = None  # the step whose output led here
    handled: bool = False  # a failure taken by onError continue/branch
    throttled: bool = False  # waiting on its action's limit since its last call (one entry)
    reason: dict[str, Any] | None = None  # why a skipped step was skipped (kept in its row)

    def record(self) -> records.StepResult:
        """The read model, built without validation: every field comes from the interpreter's
        own state, of the right type already (``execute`` returns one per step)."""
        return records.StepResult.model_construct(
            step_name=self.path,
            status=StepStatus(self.status),
            input=self.input,
            output=self.output,
            error=self.error,
            attempts=self.attempts,
            iteration=self.iteration,
            started_at=self.started_at,
            completed_at=self.completed_at,
            next_attempt_at=self.wake_at,
            reason=self.reason,
        )

    def copy(self) -> StepState:
        """A shallow copy (``copy.copy`` goes through ``__reduce_ex__``: several times slower)."""
        new = StepState.__new__(StepState)
        new.__dict__.update(self.__dict__)
        return new

    def extra(self) -> dict[str, Any]:
        """What the step table does not hold; kept in the instance's state column."""
        out: dict[str, Any] = {}
        if self.phase:
            out["phase"] = self.phase
        if self.event:
            out["event"] = self.event
        if self.prev:
            out["prev"] = self.prev
        if self.deadline:
            out["deadline"] = self.deadline.isoformat()
        if self.wake_at:
            out["wake_at"] = self.wake_at.isoformat()
        if self.handled:
            out["handled"] = True
        if self.throttled:
            out["throttled"] = True
        return out


class StepView(Protocol):
    """A step record to read, never to change: what ``State.steps`` and ``State.peek`` give.

    The copy rule: a clone's records are shared with the state it was cloned from (a decision
    copies only the few it changes, not every step of the workflow). Read them through this
    type; change one only through ``State.edit`` (a private copy, taken once per decision) or
    ``State.put`` (a new record), which return a ``StepState``.
    """

    @property
    def path(self) -> str: ...
    @property
    def status(self) -> StepStatus: ...
    @property
    def input(self) -> Any: ...
    @property
    def output(self) -> Any: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def iteration(self) -> int: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def wake_at(self) -> datetime | None: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def event(self) -> str | None: ...
    @property
    def deadline(self) -> datetime | None: ...
    @property
    def prev(self) -> str | None: ...
    @property
    def handled(self) -> bool: ...
    @property
    def throttled(self) -> bool: ...
    @property
    def reason(self) -> dict[str, Any] | None: ...
    def record(self) -> records.StepResult: ...
    def extra(self) -> dict[str, Any]: ...


def copy_branches(branches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Copy the records the interpreter changes (status, next index), not the JSON values
    they hold: a deep copy of a 1,000-item map on every step made maps quadratic."""
    out: dict[str, dict[str, Any]] = {}
    for path, by_branch in branches.items():
        copied: dict[str, Any] = {}
        for key, record in by_branch.items():
            record = dict(record)
            if isinstance(record.get("results"), dict):  # a map stored by the previous release
                record["results"] = dict(record["results"])
            copied[key] = record
        out[path] = copied
    return out


def _without_items(by_branch: dict[str, Any]) -> dict[str, Any]:
    """A map's items are its step row's input, written once: rewriting them with the state
    column on every commit made a map of n items cost n² (they come back in ``restore``)."""
    meta = by_branch.get(MAP)
    if meta is None or "items" not in meta:
        return by_branch
    return {**by_branch, MAP: {k: v for k, v in meta.items() if k != "items"}}


@dataclass
class State:
    # an ``InstanceStatus`` (typed ``str`` while the runner still writes plain strings)
    status: str = InstanceStatus.PENDING
    input: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: Mapping[str, StepView] = field(default_factory=dict)  # change: ``edit``, ``put``
    active: list[str] = field(default_factory=list)
    loops: dict[str, int] = field(default_factory=dict)  # loop target path -> iterations
    loop_started: dict[str, datetime] = field(default_factory=dict)  # loop path -> first pass
    compensations: list[str] = field(default_factory=list)  # saga: steps still to undo, in order
    deferred: list[list[Any]] = field(default_factory=list)  # [kind, path, prev] held by a pause
    order: list[str] = field(default_factory=list)  # undoable steps by latest completion
    # a completed step entered again (a loop's body, a scope started again): its previous
    # output, still what ``ctx.steps`` and expressions see until it completes again
    latest: dict[str, Any] = field(default_factory=dict)
    trigger_event: Any = None  # the data of the event whose trigger started the instance
    redo: list[str] = field(default_factory=list)  # retry: compensated steps to run again first
    branches: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # parallel path -> branch -> result
    deadline: datetime | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # Memos kept from one decision to the next, so that a step costs the same however many
    # came before it: top-level steps that finished (``workflow.progress``) and steps that may
    # not be settled (a superset: ``frontier_json`` checks each). None: not known yet (restored).
    finished_top: frozenset[str] | None = field(default=None, compare=False, repr=False)
    unsettled: frozenset[str] | None = field(default=None, compare=False, repr=False)
    # a clone's records it has copied or put (``edit``); None: every record is its own
    _own: set[str] | None = field(default=None, init=False, compare=False, repr=False)

    def clone(self) -> State:
        """A copy the interpreter may change freely: step records are shared until changed
        (``edit`` copies one, one level deep, the first time); JSON values (input, output,
        error) are shared, never changed in place. ``settle`` ends the sharing once the
        decision is made."""
        new = State.__new__(State)  # copy.copy goes through __reduce_ex__: several times slower
        new.__dict__.update(self.__dict__)
        new.metadata = dict(self.metadata)
        new.steps = dict(self.steps)
        new._own = set()
        new.active = list(self.active)
        new.loops = dict(self.loops)
        new.loop_started = dict(self.loop_started)
        new.compensations = list(self.compensations)
        new.deferred = [list(item) for item in self.deferred]
        new.order = list(self.order)
        new.latest = dict(self.latest)
        new.redo = list(self.redo)
        new.branches = copy_branches(self.branches)
        return new

    def settle(self) -> None:
        """The decision is made: every record is this state's own (no copy on ``edit``)."""
        self._own = None

    def peek(self, path: str) -> StepView | None:
        """The record of ``path`` to read (no copy is taken), or None."""
        return self.steps.get(path)

    def edit(self, path: str) -> StepState:
        """The record of ``path`` to change: in a clone, a private copy the first time."""
        records = self._records()
        st = records[path]
        if self._own is not None and path not in self._own:
            st = records[path] = st.copy()
            self._own.add(path)
        return st

    def put(self, st: StepState) -> StepState:
        """``st`` becomes the record at its path (in place of any earlier one)."""
        self._records()[st.path] = st
        if self._own is not None:
            self._own.add(st.path)
        return st

    def step(self, path: str) -> StepState:
        """The record of ``path`` to change (``edit``), a new pending one if it has none."""
        return self.edit(path) if path in self.steps else self.put(StepState(path))

    def _records(self) -> dict[str, StepState]:
        """The records themselves: a dict of ``StepState`` (``steps`` is typed to be read)."""
        return self.steps  # type: ignore[return-value]

    def frontier_json(self) -> dict[str, Any]:
        """The instance's ``state`` column: everything but step rows' own columns. It shares
        this state's containers (encoded at once; a decision changes a clone, never this)."""
        out = {
            "active": self.active,
            "loops": self.loops,
            "loop_started": {p: t.isoformat() for p, t in self.loop_started.items()},
            "compensations": self.compensations,
            "deferred": self.deferred,
            "order": self.order,
            "branches": {p: _without_items(r) for p, r in self.branches.items()},
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "extra": {
                p: x
                for p in self.maybe_unsettled()
                if (s := self.steps.get(p)) is not None
                and s.status not in SETTLED
                and (x := s.extra())
            },
        }
        if self.latest:  # only while a step runs again: most states never carry it
            out["latest"] = self.latest
        if self.trigger_event is not None:
            out["event"] = self.trigger_event
        if self.redo:
            out["redo"] = self.redo
        return out

    def maybe_unsettled(self) -> list[str]:
        """Paths of every step that is not completed or skipped (and maybe a few that are),
        sorted; from the memo when there is one, else from every step."""
        if self.unsettled is None:
            self.unsettled = frozenset(p for p, s in self.steps.items() if s.status not in SETTLED)
        return sorted(self.unsettled)

    @classmethod
    def restore(
        cls,
        *,
        status: InstanceStatus | str,
        input: Any,
        metadata: dict[str, Any],
        frontier: dict[str, Any],
        steps: list[records.StepResult],
        output: Any = None,
        error: Any = None,
        started_at: datetime | None = None,
        completed_at: datetime | None = None,
    ) -> State:
        state = cls(
            status=InstanceStatus(status),
            input=input,
            metadata=dict(metadata),
            output=output,
            error=error,
            started_at=started_at,
            completed_at=completed_at,
        )
        state.active = list(frontier.get("active", []))
        state.loops = dict(frontier.get("loops", {}))
        state.compensations = list(frontier.get("compensations", []))
        state.deferred = [list(item) for item in frontier.get("deferred", [])]
        state.loop_started = {
            p: t for p, raw in frontier.get("loop_started", {}).items() if (t := _dt(raw))
        }
        state.order = list(frontier.get("order", []))
        state.latest = dict(frontier.get("latest", {}))
        state.trigger_event = frontier.get("event")
        state.redo = list(frontier.get("redo", []))
        state.branches = jsondata.copy_json(dict(frontier.get("branches", {})))
        for path, by_branch in state.branches.items():
            meta = by_branch.get(MAP)
            if meta is not None and "items" not in meta:  # kept once, as the map step's input
                row = next((r for r in steps if r.step_name == path), None)
                meta["items"] = row.input if row is not None and isinstance(row.input, list) else []
        state.deadline = _dt(frontier.get("deadline"))
        extra: dict[str, dict[str, Any]] = frontier.get("extra", {})
        for r in steps:
            x = extra.get(r.step_name, {})
            state.put(
                StepState(
                    path=r.step_name,
                    status=r.status,
                    input=r.input,
                    output=r.output,
                    error=r.error,
                    attempts=r.attempts,
                    iteration=r.iteration,
                    started_at=r.started_at,
                    completed_at=r.completed_at,
                    wake_at=_dt(x.get("wake_at")) or r.next_attempt_at,
                    phase=Phase(phase) if (phase := x.get("phase")) else Phase.NONE,
                    event=x.get("event"),
                    deadline=_dt(x.get("deadline")),
                    prev=x.get("prev"),
                    handled=bool(x.get("handled")),
                    throttled=bool(x.get("throttled")),
                    reason=r.reason,
                )
            )
        return state

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)
