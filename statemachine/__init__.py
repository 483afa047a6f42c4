"""statemachine: a durable, declarative workflow engine (fluent builder or YAML; SQLite or Postgres).

The public names load on first use (PEP 562): the command line imports ``statemachine.cli``
through this package, and ``statemachine --help`` should not pay for pydantic, SQLAlchemy and
Alembic it never uses. ``from statemachine import Engine`` works as before.
"""

from typing import TYPE_CHECKING, Any

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
    StoreRefused,
    WorkflowNotFound,
)

if TYPE_CHECKING:
    from statemachine.definition.builder import branch, when, workflow
    from statemachine.definition.loader import load_definitions, load_yaml
    from statemachine.definition.models import RetryPolicy, WorkflowDefinition
    from statemachine.engine.facade import Engine
    from statemachine.engine.settings import EngineSettings
    from statemachine.records import HistoryEntry, ScheduleInfo, StepResult, WorkflowInstance
    from statemachine.runtime.context import StepContext
    from statemachine.runtime.migration import MigrationCheck, MigrationPlan
    from statemachine.vocabulary import (
        JSON,
        Duration,
        ErrorInfo,
        InstanceStatus,
        JSONObject,
        StepStatus,
    )

    __version__: str

_LAZY = {
    "branch": "statemachine.definition.builder",
    "when": "statemachine.definition.builder",
    "workflow": "statemachine.definition.builder",
    "load_definitions": "statemachine.definition.loader",
    "load_yaml": "statemachine.definition.loader",
    "RetryPolicy": "statemachine.definition.models",
    "WorkflowDefinition": "statemachine.definition.models",
    "Engine": "statemachine.engine.facade",
    "EngineSettings": "statemachine.engine.settings",
    "HistoryEntry": "statemachine.records",
    "StepResult": "statemachine.records",
    "WorkflowInstance": "statemachine.records",
    "ScheduleInfo": "statemachine.records",
    "StepContext": "statemachine.runtime.context",
    "MigrationCheck": "statemachine.runtime.migration",
    "MigrationPlan": "statemachine.runtime.migration",
    "JSON": "statemachine.vocabulary",
    "JSONObject": "statemachine.vocabulary",
    "Duration": "statemachine.vocabulary",
    "ErrorInfo": "statemachine.vocabulary",
    "InstanceStatus": "statemachine.vocabulary",
    "StepStatus": "statemachine.vocabulary",
}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("durable-statemachine")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'statemachine' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "__version__"])


__all__ = [
    "JSON",
    "CriticalError",
    "DefinitionError",
    "Duration",
    "Engine",
    "EngineSettings",
    "ErrorInfo",
    "ExpressionError",
    "HistoryEntry",
    "InputValidationError",
    "InstanceNotFound",
    "InstanceStatus",
    "InvalidTransition",
    "Issue",
    "JSONObject",
    "LeaseLost",
    "LoopLimitExceeded",
    "MigrationCheck",
    "MigrationPlan",
    "OutputNotStorable",
    "RetryPolicy",
    "ScheduleInfo",
    "StatemachineError",
    "StepContext",
    "StepError",
    "StepResult",
    "StepStatus",
    "StepTimeoutError",
    "StoreError",
    "StoreRefused",
    "WorkflowDefinition",
    "WorkflowInstance",
    "WorkflowNotFound",
    "branch",
    "load_definitions",
    "load_yaml",
    "when",
    "workflow",
]
