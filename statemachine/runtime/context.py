"""``StepContext``: what a handler gets besides its input."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from statemachine import errors
from statemachine.runtime import jsondata
from statemachine.runtime.flowview import FlowView

_log = logging.getLogger("statemachine.steps")
LOG_ENTRY = "workflow.step.log"  # the history type of a ctx.log line
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
        record_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._view = view
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self._set_metadata = set_metadata
        self._emit = emit
        self._record_log = record_log
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
        """To the logger ``statemachine.steps`` now, and into the instance's history (type
        ``workflow.step.log``) with the step's result: in the same commit, so the line is as
        durable as the result, and lost with it if the process dies before that commit."""
        number = _level_number(level)
        text = _safe_text(str(message))
        stored = {k: _storable(k, v) for k, v in fields.items()}
        shown = "".join(f" {k}={_shown(v)}" for k, v in stored.items())
        _log.log(
            number,
            "[%s] %s/%s: %s%s",
            self.instance_id, self.workflow_name, self.step_name, text, shown,
            extra={
                "instance_id": self.instance_id, "workflow": self.workflow_name,
                "step": self.step_name, "fields": fields,
            },
        )  # fmt: skip
        if self._record_log is not None:
            name = logging.getLevelName(number)
            level_name = name.lower() if isinstance(name, str) else str(number)
            self._record_log({"level": level_name, "message": text, "fields": stored})

    def emit(self, event: str, data: Any = None) -> None:
        """Checked here, in the handler: a name or data the database would refuse must fail
        this call, not the commit of the step's result (which would run the handler again)."""
        jsondata.check_name(event, "ctx.emit's event name", EVENT_NAME_LENGTH)
        try:
            payload = jsondata.to_storable(data, what=f"data of event {event!r}")
        except errors.OutputNotStorable as exc:
            issue = errors.Issue(str(exc), location="data", code="not_json")
            raise errors.InputValidationError(f"ctx.emit: {exc}", errors=[issue]) from None
        self._emit(event, payload)

    def __repr__(self) -> str:
        return f"StepContext(instance_id={self.instance_id!r}, step={self.step_name!r}, attempt={self.attempt})"


def _level_number(level: str | int) -> int:
    """``"info"``, ``"WARNING"``, ``"warn"`` or ``logging.INFO``; anything else is INFO."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(str(level).upper())
    return number if isinstance(number, int) else logging.INFO


def _safe_text(text: str) -> str:
    """Storable on both databases whatever a handler logs: no NUL, no lone surrogate."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(key: str, value: Any) -> Any:
    """A field as JSON when it is JSON, else its ``repr``: a log line never fails its step."""
    try:
        return jsondata.to_storable(value, what=f"log field {key!r}", limit=64_000)
    except errors.OutputNotStorable:
        return _safe_text(repr(value))[:64_000]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else json.dumps(value)
