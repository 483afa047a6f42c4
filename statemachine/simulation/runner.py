"""``simulate``: run a workflow's cases against scripted actions and measure graph coverage.

Every case runs on one in-memory engine whose clock is a ``ManualClock``: time passes by moving
the clock to the next timer that is due (a retry's backoff, a wait, a poll's interval, a
timeout) and running what became due, never by sleeping, so a case that waits three days takes
milliseconds. Timers fire in their order even when one ``advance`` spans several of them.
A case that has not finished when its time is up is reported with the status it stopped in
(``waiting``, say), then cancelled so it cannot act during the next case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from statemachine import Engine, WorkflowInstance, errors
from statemachine.definition import issues, loader, models
from statemachine.simulation import coverage, mocks
from statemachine.simulation.cases import Case, Event, SimulationError, load_cases
from statemachine.simulation.clock import ManualClock
from statemachine.simulation.report import CaseResult, SimulationReport, build_coverage, unmet

MAX_TICKS = 100_000  # timers fired within one span of time: a bound, not a budget

DefinitionLike = models.WorkflowDefinition | str | Path


def simulate(
    definition: DefinitionLike,
    cases: str | Path | Sequence[Any],
    *,
    definitions: Iterable[DefinitionLike] = (),
) -> SimulationReport:
    """Run each case of ``cases`` on ``definition`` and report outcomes and coverage.

    ``cases``: a YAML file, YAML text, or a list of dicts (an exception instance stands for
    ``{raise: ...}``). ``definitions``: other workflows, among them the children that the
    definition's subworkflow steps start (run for real, their actions answered from the same
    case); workflows no subworkflow names are ignored. Coverage is of ``definition``'s graph.
    Raises ``SimulationError`` for a case that cannot run as written.
    """
    main = _definition(definition)
    family = _family(main, [_definition(d) for d in definitions])
    scripted = load_cases(cases)
    used = set().union(*(mocks.used_actions(d) for d in family))
    waited = {
        step.event
        for d in family
        for _, step in d.walk()
        if isinstance(step, models.WaitStep) and step.event
    }
    for case in scripted:
        _check_case(case, main.name, used, waited)
    with Simulator(main, family, (used - mocks.BUILTIN) | _mocked_builtins(scripted)) as sim:
        results = [sim.run(case) for case in scripted]
    outcomes: dict[str, set[str]] = {}
    for rules in sim.rules:
        for step, seen in rules.items():
            outcomes.setdefault(step, set()).update(seen)
    return SimulationReport(
        workflow=main.name,
        version=main.version,
        cases=tuple(results),
        coverage=build_coverage(
            [path for path, _ in main.walk()],
            coverage.graph_edges(main),
            coverage.rule_points(main),
            results,
            outcomes,
        ),
    )


class Simulator:
    """One engine, its clock and its scripted actions, reused by every case of a simulation."""

    def __init__(
        self,
        main: models.WorkflowDefinition,
        family: Sequence[models.WorkflowDefinition],
        actions: set[str],
    ) -> None:
        self.main = main
        self.clock = ManualClock()
        self.actions = mocks.Actions()
        self.engine = Engine("sqlite:///:memory:", clock=self.clock)
        self.rules: list[dict[str, set[str]]] = []
        self.actions.register(self.engine, actions)
        self.engine.register(list(family))

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *_: object) -> None:
        self.engine.close()

    def run(self, case: Case) -> CaseResult:
        self.actions.use(case)
        try:
            root = self.engine.start(self.main.name, case.input)
        except errors.StatemachineError as exc:
            message = f"case {case.name!r}: the workflow refused the input: {exc}"
            raise SimulationError(message) from None
        notes: list[str] = []
        try:
            self.settle(root, 0.0)
            for event in case.events:
                self.settle(root, event.after)
                self._send(root, event, notes)
                self.settle(root, 0.0)
            self.settle(root, case.advance)
        except errors.StatemachineError as exc:
            if isinstance(exc, SimulationError):
                raise
            raise SimulationError(f"case {case.name!r}: {exc}") from None
        if self.actions.problems:
            raise SimulationError(f"case {case.name!r}: {self.actions.problems[0]}")
        return self._result(case, root, notes)

    def _send(self, root: str, event: Event, notes: list[str]) -> None:
        """Send ``event`` to the instance of the case that waits for it; one that arrives after
        the run ended (a decision later than the wait's timeout) is a note, not an error."""
        target = self._waiting_for(root, event.name)
        try:
            self.engine.send_event(target, event.name, event.data)
        except errors.InvalidTransition:
            status = self.engine.get(target).status
            notes.append(f"event {event.name!r} not delivered: the instance had ended ({status})")

    def _result(self, case: Case, root: str, notes: list[str]) -> CaseResult:
        instance = self.engine.get(root)
        trace = coverage.trace(self.main, self.engine.history(root))
        self.rules.append(trace.rules)
        if not instance.is_terminal:
            self._stop(root)
        error = None
        if instance.error is not None:
            error = {k: v for k, v in instance.error.items() if k != "traceback"}
        return CaseResult(
            name=case.name,
            status=instance.status,
            output=instance.output,
            error=error,
            steps=tuple(trace.steps),
            edges=frozenset(trace.edges),
            calls=self.actions.calls,
            notes=tuple(notes),
            elapsed=_elapsed(instance),
            unmet=tuple(unmet(dict(case.expect), instance.status, instance.output, error)),
            instance_id=root,
        )

    def settle(self, root: str, seconds: float) -> None:
        """Let ``seconds`` pass: run what is due, then move the clock to each next timer of the
        case's instances in turn (a retry scheduled by a retry fires too), up to the end."""
        end = self.clock.now() + timedelta(seconds=seconds)
        for _ in range(MAX_TICKS):
            self.engine.run_due()
            now = self.clock.now()
            wakes = [
                i.wake_at
                for i in self._tree(root)
                if not i.is_terminal and i.wake_at is not None and now < i.wake_at <= end
            ]
            if wakes:
                self.clock.set(min(wakes))
            elif now < end:
                self.clock.set(end)
            else:
                return
        raise SimulationError(f"time did not settle after {MAX_TICKS} timers")

    def _tree(self, root: str) -> list[WorkflowInstance]:
        """The case's instances: the root and its subworkflows, at any depth."""
        found = [self.engine.get(root)]
        todo = [root]
        while todo:
            children = self.engine.list(parent_id=todo.pop(), limit=10_000)
            found.extend(children)
            todo.extend(c.id for c in children)
        return found

    def _waiting_for(self, root: str, event: str) -> str:
        """The instance an event goes to: the root, unless only a subworkflow of the case
        waits for it (then the one waiting, else the newest still running)."""
        waits_in_root = any(
            isinstance(s, models.WaitStep) and s.event == event for _, s in self.main.walk()
        )
        if waits_in_root:
            return root
        for instance in self._tree(root)[1:]:
            if not instance.is_terminal:
                definition = self.engine.definition(instance.workflow_name)
                if any(
                    isinstance(s, models.WaitStep) and s.event == event
                    for _, s in definition.walk()
                ):
                    return instance.id
        return root

    def _stop(self, root: str) -> None:
        with contextlib.suppress(errors.InvalidTransition):
            self.engine.cancel(root)


def _elapsed(instance: WorkflowInstance) -> float | None:
    """Simulated seconds from the start to the end of a finished run (None: not finished)."""
    if instance.completed_at is None or instance.started_at is None:
        return None
    return (instance.completed_at - instance.started_at).total_seconds()


def _definition(value: DefinitionLike) -> models.WorkflowDefinition:
    if isinstance(value, models.WorkflowDefinition):
        return value
    if isinstance(value, Path):
        return loader.load_yaml_file(value)
    return loader.load_yaml(value)


def _family(
    main: models.WorkflowDefinition, others: Sequence[models.WorkflowDefinition]
) -> list[models.WorkflowDefinition]:
    """``main`` and the workflows its subworkflow steps start, at any depth (children first,
    as the engine registers them)."""
    by_name = {d.name: d for d in others}
    by_name[main.name] = main
    family: dict[str, models.WorkflowDefinition] = {}
    todo = [main]
    while todo:
        current = todo.pop()
        if current.name in family:
            continue
        family[current.name] = current
        for path, step in current.walk():
            if not isinstance(step, models.SubworkflowStep):
                continue
            child = by_name.get(step.workflow)
            if child is None:
                hint = issues.did_you_mean(step.workflow, by_name)
                raise SimulationError(
                    f"{current.name}: step {path!r} starts workflow {step.workflow!r}: pass "
                    f"its definition too (definitions=[...]; on the command line, its file "
                    f"or folder){hint}"
                )
            todo.append(child)
    return list(reversed(family.values()))


def _mocked_builtins(cases: Sequence[Case]) -> set[str]:
    return {name for case in cases for name in case.actions if name in mocks.BUILTIN}


def _check_case(case: Case, workflow: str, used: set[str], waited: set[str]) -> None:
    """A case mocks only actions the workflow calls and sends only events it waits for."""
    for action in case.actions:
        if action not in used and action not in mocks.BUILTIN:
            hint = issues.did_you_mean(action, used)
            known = ", ".join(sorted(used)) or "none"
            raise SimulationError(
                f"case {case.name!r}: action {action!r} is not used by workflow "
                f"{workflow!r}{hint}; it calls: {known}"
            )
    for event in case.events:
        if event.name not in waited:
            hint = issues.did_you_mean(event.name, waited)
            known = ", ".join(sorted(waited)) or "no event"
            raise SimulationError(
                f"case {case.name!r}: event {event.name!r} is not waited for by workflow "
                f"{workflow!r}{hint}; it waits for: {known}"
            )
