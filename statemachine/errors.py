"""The one exception family of statemachine.

::

    StatemachineError                 every error the package raises on purpose
    ├── DefinitionError               a workflow definition is invalid (.errors lists every Issue)
    ├── ExpressionError               an expression is unsafe, malformed or failed to evaluate
    ├── InputValidationError          workflow input, event data or a control argument is invalid
    ├── WorkflowNotFound              no registered workflow by that name (or version)
    ├── InstanceNotFound              no instance by that id
    ├── InvalidTransition             a control call not allowed in the instance's status
    ├── StepError                     raised inside or about one step
    │   ├── CriticalError             raised by a handler: fail the step now, never retry
    │   ├── StepTimeoutError          a step or an event wait ran out of time
    │   ├── LoopLimitExceeded         a loop would run more than its max_iterations
    │   └── OutputNotStorable         a step's output is not JSON the store can keep
    ├── LeaseLost                     another worker owns the instance now (fencing)
    └── StoreError                    the database failed (the driver error is ``__cause__``)
        └── StoreRefused              the database refused the data itself: trying again cannot help

Every class has a stable ``code`` used by the CLI and the HTTP API. Classes also derive from the
builtin a Python caller would catch: ``DefinitionError`` and ``InputValidationError`` are
``ValueError``s, ``WorkflowNotFound`` and ``InstanceNotFound`` ``LookupError``s,
``StepTimeoutError`` a ``TimeoutError``. Every error survives
``pickle`` (a process pool, a multiprocessing queue) with its type, message and fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def _rebuild(cls: type[StatemachineError], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    """Unpickle without calling ``cls.__init__``: its arguments are not the message it made."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class StatemachineError(Exception):
    """Root of every error statemachine raises on purpose."""

    code = "statemachine_error"

    def __reduce__(self) -> tuple[Any, ...]:
        # the default (``cls(*self.args)``) would feed the finished message back to
        # ``__init__``, which formats it again (or refuses the keywords it needs)
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


@dataclass(frozen=True)
class Issue:
    """One problem found in a definition or an input; line and column are 1-based, 0 when
    unknown (an input has no lines), ``path`` is the definition's file when known."""

    message: str
    location: str = ""
    path: str | None = None
    line: int = 0
    column: int = 0
    code: str = "invalid"

    def __str__(self) -> str:
        where = self.path or "<definition>"
        prefix = f"{where}:{self.line}:{self.column}" if self.line else where
        loc = f" {self.location}:" if self.location else ""
        return f"{prefix}:{loc} {self.message}"


class DefinitionError(StatemachineError, ValueError):
    """A definition is invalid; ``errors`` holds every problem found, not only the first."""

    code = "definition_error"

    def __init__(self, errors: Iterable[Issue] | str) -> None:
        self.errors: list[Issue] = [Issue(errors)] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class ExpressionError(StatemachineError):
    """An expression was rejected at load time or failed while evaluating."""

    code = "expression_error"

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        self.expression = expression
        super().__init__(message)


class InputValidationError(StatemachineError, ValueError):
    """Input (workflow input, event data, a control argument) did not validate.

    ``errors`` holds one ``Issue`` per problem found in a value checked field by field (a
    schema, storable JSON), the same shape as ``DefinitionError.errors``: ``location`` names
    the field from the argument down (``input.customer.email``, ``data.amount``) and ``code``
    the validator's error type (``missing``, ``required``, ``not_json``). It is empty when an
    argument is refused as a whole (a priority out of range, an empty name)."""

    code = "invalid_input"

    def __init__(self, message: str, *, errors: Iterable[Issue] = ()) -> None:
        self.errors: list[Issue] = list(errors)
        super().__init__(message)


class WorkflowNotFound(StatemachineError, LookupError):
    code = "workflow_not_found"

    def __init__(self, name: str, message: str | None = None) -> None:
        self.workflow_name = name
        super().__init__(message or f"no workflow named {name!r} is registered")


class InstanceNotFound(StatemachineError, LookupError):
    code = "instance_not_found"

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no workflow instance with id {instance_id!r}")


class InvalidTransition(StatemachineError):
    code = "invalid_transition"

    def __init__(
        self, message: str, *, instance_id: str | None = None, status: str | None = None
    ) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(message)


class StepError(StatemachineError):
    """An error about one step; ``step`` names it when known."""

    code = "step_error"

    def __init__(
        self, message: str = "", *, step: str | None = None, attempt: int | None = None
    ) -> None:
        self.step = step
        self.attempt = attempt
        super().__init__(message)


class CriticalError(StepError):
    """Raise from a handler to fail the step at once, with no retry."""

    code = "critical_error"


class StepTimeoutError(StepError, TimeoutError):
    code = "step_timeout"


class LoopLimitExceeded(StepError):
    """A loop's condition still held after ``max_iterations`` passes (its time bound is a
    ``StepTimeoutError``); raise ``max_iterations`` or make the condition turn false."""

    code = "loop_limit_exceeded"


class OutputNotStorable(StepError):
    code = "output_not_storable"


class LeaseLost(StatemachineError):
    """This worker's claim was superseded; its writes are refused."""

    code = "lease_lost"


class StoreError(StatemachineError):
    """The database failed: locked, unreachable, or (``StoreRefused``) it refused the data.
    A plain ``StoreError`` may pass if tried again later."""

    code = "store_error"


class StoreRefused(StoreError):
    """The database refused the data itself (SQLSTATE class 22 or 23, a value the driver
    cannot encode): the same write would be refused again, so it is never retried."""

    code = "store_refused"
