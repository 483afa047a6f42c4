"""Stand-ins for a workflow's actions during a simulation: each call answers from the case.

One ``Actions`` object serves every case of a simulation (the engine is built once); the case
being run is swapped in by ``use``. A call the case does not script (an action it does not mock,
or a list of results that ran out) cannot be answered: it fails the step with a
``CriticalError`` so the run stops at once, and is kept as a problem that the simulator raises,
naming the case and the action, once the run has stopped.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from typing import Any

from statemachine import errors
from statemachine.definition import models
from statemachine.simulation.cases import Case

# an action the engine provides itself: a case may mock it, it need not
BUILTIN = frozenset({"noop"})


def used_actions(definition: models.WorkflowDefinition) -> set[str]:
    """Every action name the definition's steps call: task handlers, poll checks, compensations."""
    names: set[str] = set()
    for _, step in definition.walk():
        for attr in ("handler", "check", "compensate"):
            value = getattr(step, attr, None)
            if isinstance(value, str):
                names.add(value)
    return names


class Actions:
    """The scripted answers of the case being run, and what went wrong answering them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._case: Case | None = None
        self._calls: dict[str, int] = {}
        self.problems: list[str] = []

    def use(self, case: Case) -> None:
        with self._lock:
            self._case = case
            self._calls = {}
            self.problems = []

    @property
    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def handler(self, action: str) -> Callable[[Any, Any], Any]:
        """The function registered as ``action``: it answers from the current case."""

        def simulated(data: Any, ctx: Any) -> Any:
            return self._answer(action, data)

        simulated.__name__ = simulated.__qualname__ = f"simulated_{action}"
        return simulated

    def register(self, engine: Any, names: Iterable[str]) -> None:
        for name in sorted(names):
            engine.action(name)(self.handler(name))

    def _answer(self, action: str, data: Any) -> Any:
        with self._lock:
            case = self._case
            count = self._calls.get(action, 0) + 1
            self._calls[action] = count
            mock = case.actions.get(action) if case is not None else None
            if mock is None and action in BUILTIN:
                return data  # noop, mocked by another case only
            if case is None or mock is None:
                return self._stop(
                    f"the run reached action {action!r}, which the case does not mock: add "
                    f"it under actions (a value, a list of values, or {{raise: message}})"
                )
            if mock.repeat:
                outcome = mock.outcomes[0]
            elif count <= len(mock.outcomes):
                outcome = mock.outcomes[count - 1]
            else:
                return self._stop(
                    f"action {action!r} was called {count} times but the case gives "
                    f"{len(mock.outcomes)} result(s): add more, or give one value (not a "
                    f"list) to answer every call"
                )
        if outcome.error is not None:
            raise _fresh(outcome.error)
        return copy.deepcopy(outcome.value)  # a step may change its output: the script stays

    def _stop(self, problem: str) -> Any:
        self.problems.append(problem)
        raise errors.CriticalError(f"simulation: {problem}")


def _fresh(error: BaseException) -> BaseException:
    """A copy of the scripted exception: raising one instance twice would chain tracebacks."""
    try:
        return copy.copy(error)
    except Exception:  # an exception that cannot be copied is raised as given
        return error
