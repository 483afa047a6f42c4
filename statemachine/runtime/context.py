"""``StepContext``: what a handler gets besides its input."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from statemachine import errors
from statemachine.runtime import jsondata
from statemachine.runtime.flowctx import FlowView

_log = logging.getLogger("statemachine.workflow")
EVENT_NAME_LENGTH = 200  # an emitted event is a history entry: its name is the entry's type


class StepContext:
    """Read-only view of the instance plus the few side effects a handler may ask for."""

    def __init__(
        self,
        view: FlowView,
        *,
        attempt: int,
        idempotency_key: str,
        set_metadata: Callable[[str, Any], None],
        emit: Callable[[str, Any], None],
    ) -> None:
        self._view = view
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self._set_metadata = set_metadata
        self._emit = emit
        self._metadata = dict(view.metadata)

    @property
    def input(self) -> Any:
        return self._view.input

    @property
    def steps(self) -> Mapping[str, Any]:
        return self._view.steps

    @property
    def prev(self) -> Any:
        return self._view.prev

    @property
    def instance_id(self) -> str:
        return self._view.instance_id

    @property
    def workflow_name(self) -> str:
        return self._view.workflow_name

    @property
    def step_name(self) -> str:
        return self._view.step_name

    @property
    def metadata(self) -> Mapping[str, Any]:
        return MappingProxyType(self._metadata)

    def set_metadata(self, key: str, value: Any) -> None:
        """Persisted at once, so it survives even if the step later fails."""
        self._set_metadata(key, value)
        self._metadata[key] = value

    def log(self, level: str | int, message: str, **fields: Any) -> None:
        lvl = level if isinstance(level, int) else logging.getLevelName(level.upper())
        _log.log(
            lvl if isinstance(lvl, int) else logging.INFO,
            message,
            extra={"instance_id": self.instance_id, "step": self.step_name, "fields": fields},
        )

    def emit(self, event: str, data: Any = None) -> None:
        """Checked here, in the handler: a name or data the database would refuse must fail
        this call, not the commit of the step's result (which would run the handler again)."""
        jsondata.check_name(event, "ctx.emit's event name", EVENT_NAME_LENGTH)
        try:
            payload = jsondata.to_storable(data, what=f"data of event {event!r}")
        except errors.OutputNotStorable as exc:
            raise errors.InputValidationError(f"ctx.emit: {exc}") from None
        self._emit(event, payload)

    def __repr__(self) -> str:
        return f"StepContext(instance_id={self.instance_id!r}, step={self.step_name!r}, attempt={self.attempt})"
