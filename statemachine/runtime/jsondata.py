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


def _check_text(text: str, where: str) -> None:
    """Postgres refuses NUL, and a lone surrogate cannot be encoded: refuse both everywhere."""
    if "\x00" in text:
        raise ValueError(f"{where}: strings must not contain NUL characters (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where}: strings must be valid Unicode (a lone surrogate was found)"
        ) from None


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
