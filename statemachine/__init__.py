"""statemachine: a durable, declarative workflow engine (fluent builder or YAML; SQLite or Postgres)."""

from importlib import metadata as _metadata

from statemachine.definition.builder import branch, when, workflow
from statemachine.definition.loader import load_definitions, load_yaml
from statemachine.definition.models import RetryPolicy, WorkflowDefinition
from statemachine.engine import Engine, EngineSettings
from statemachine.errors import (
    CriticalError,
    DefinitionError,
    ExpressionError,
    InputValidationError,
    InstanceNotFound,
    InvalidTransition,
    Issue,
    LeaseLost,
    LoopLimitExceeded,
    OutputNotStorable,
    StatemachineError,
    StepError,
    StepTimeoutError,
    StoreError,
    WorkflowNotFound,
)
from statemachine.records import HistoryEntry, StepResult, WorkflowInstance
from statemachine.runtime.context import StepContext

try:
    __version__ = _metadata.version("durable-statemachine")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CriticalError",
    "DefinitionError",
    "Engine",
    "EngineSettings",
    "ExpressionError",
    "HistoryEntry",
    "InputValidationError",
    "InstanceNotFound",
    "InvalidTransition",
    "Issue",
    "LeaseLost",
    "LoopLimitExceeded",
    "OutputNotStorable",
    "RetryPolicy",
    "StatemachineError",
    "StepContext",
    "StepError",
    "StepResult",
    "StepTimeoutError",
    "StoreError",
    "WorkflowDefinition",
    "WorkflowInstance",
    "WorkflowNotFound",
    "branch",
    "load_definitions",
    "load_yaml",
    "when",
    "workflow",
]
