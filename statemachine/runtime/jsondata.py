"""Making handler outputs storable JSON, the same way on SQLite and Postgres."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from pydantic import BaseModel

from statemachine import errors, jsontext

MAX_BYTES = 1_000_000
_encode = jsontext.encoder(allow_nan=False)
_decode = json.JSONDecoder().decode


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data; ``copy.deepcopy`` is several times slower (a memo, any type).
    Anything that is not JSON falls back to it."""
    kind = type(value)
    if kind is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if kind is list:
        return [copy_json(v) for v in value]
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    return copy.deepcopy(value)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored on every database, or None: Postgres refuses NUL in
    text and JSON, and a lone surrogate cannot be encoded at all; refused everywhere, so
    what is accepted does not depend on the backend."""
    if "\x00" in text:
        return "strings must not contain NUL characters (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "strings must be valid Unicode (a lone surrogate was found)"
    return None


def check_name(value: Any, what: str, limit: int) -> str:
    """A name stored in a text column (an event's, an id): a non-empty string of at most
    ``limit`` characters that every database can store; else ``InputValidationError``."""
    if not isinstance(value, str) or not value:
        raise errors.InputValidationError(
            f"{what} must be a non-empty string of at most {limit} characters, "
            f"not {type(value).__name__} {value!r}"[:300]
        )
    if len(value) > limit:
        raise errors.InputValidationError(
            f"{what} is {len(value)} characters long; at most {limit} can be stored: "
            f"shorten {value[:40]!r}..."
        )
    problem = text_problem(value)
    if problem is not None:
        raise errors.InputValidationError(f"{what} {value!r}: {problem}")
    return value


def _check_text(text: str, where: str) -> None:
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def printable_error(error: dict[str, Any]) -> dict[str, Any]:
    """An error dict whose strings every database stores: a handler's exception message may
    hold NUL characters or lone surrogates, and a failure must be recorded whatever its text
    (refusing it would leave the step unrecorded). Both are shown escaped instead."""
    return {k: _printable(v) if isinstance(v, str) else v for k, v in error.items()}


def _printable(text: str) -> str:
    if text_problem(text) is None:
        return text
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check(value: Any, where: str) -> None:
    stack = [value]
    seen: set[int] = set()  # a value shared, or one that contains itself, is looked at once
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, float):
            if math.isnan(item) or math.isinf(item):
                raise ValueError(
                    f"{where}: {item} is not valid JSON (NaN and Infinity cannot be stored)"
                )
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise ValueError(f"{where}: dict keys must be strings, got {type(k).__name__}")
                _check_text(k, where)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif item is None or isinstance(item, bool | int):
            continue
        else:
            raise ValueError(
                f"{where}: {type(item).__name__} is not JSON (return dicts, lists, str, numbers, bool, None or a pydantic model)"
            )


def to_storable(value: Any, *, what: str, step: str | None = None, limit: int = MAX_BYTES) -> Any:
    """JSON-safe copy of ``value``; pydantic models are dumped; anything else fails clearly."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    try:
        _check(value, what)
        text = _encode(value)
    except (ValueError, TypeError) as exc:
        raise errors.OutputNotStorable(str(exc), step=step) from None
    except RecursionError:
        raise errors.OutputNotStorable(
            f"{what} contains itself, or is nested too deeply to store as JSON", step=step
        ) from None
    if len(text) > limit:
        raise errors.OutputNotStorable(
            f"{what} is {len(text)} bytes of JSON, over the {limit}-byte limit", step=step
        )
    return _decode(text)
