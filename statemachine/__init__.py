"""statemachine: a durable, declarative workflow engine (fluent builder or YAML; SQLite or Postgres)."""

from statemachine.definition.builder import branch, when, workflow
from statemachine.definition.loader import load_definitions, load_yaml
from statemachine.definition.models import RetryPolicy, WorkflowDefinition
from statemachine.engine import Engine
from statemachine.errors import (
    CriticalError,
    DefinitionError,
    ExpressionError,
    InputValidationError,
    InstanceNotFound,
    InvalidTransition,
    LoopLimitExceeded,
    StatemachineError,
    StepTimeoutError,
    WorkflowNotFound,
)
from statemachine.records import HistoryEntry, StepResult, WorkflowInstance
from statemachine.runtime.context import StepContext

__all__ = [
    "CriticalError",
    "DefinitionError",
    "Engine",
    "ExpressionError",
    "HistoryEntry",
    "InputValidationError",
    "InstanceNotFound",
    "InvalidTransition",
    "LoopLimitExceeded",
    "RetryPolicy",
    "StatemachineError",
    "StepContext",
    "StepResult",
    "StepTimeoutError",
    "WorkflowDefinition",
    "WorkflowInstance",
    "WorkflowNotFound",
    "branch",
    "load_definitions",
    "load_yaml",
    "when",
    "workflow",
]
