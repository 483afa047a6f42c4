"""How expressions see values: as JSON. Their kind (for messages), text and estimated size.

``str()``, templates and the size checks of results all write values as JSON would (null,
true/false, JSON for objects and lists); every failure names the expression it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from statemachine import errors

MAX_SEQUENCE = 100_000  # characters or items that one operation may build


def error(source: str, what: str) -> errors.ExpressionError:
    return errors.ExpressionError(f"expression {source!r}: {what}", expression=source)


def kind_of(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"a boolean ({json_text(value)})"
    if isinstance(value, int | float | str):
        return f"a {'string' if isinstance(value, str) else 'number'} ({value!r:.40})"
    if isinstance(value, Mapping | list | tuple):
        return "an object" if isinstance(value, Mapping) else "a list"
    return f"a {type(value).__name__}"


def json_size(value: Any, limit: int, memo: dict[int, int] | None = None) -> int:
    """Estimated JSON length of value: every use of a shared part counts, each is walked once."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if not isinstance(value, Mapping | list | tuple):
        return 24
    memo = {} if memo is None else memo
    if id(value) not in memo:
        total = 2
        for part in (*value.keys(), *value.values()) if isinstance(value, Mapping) else value:
            kind = type(part)  # the common scalars inline: this runs once per item
            if kind is str:
                total += len(part) + 3
            elif kind is int or kind is bool:
                total += part.bit_length() // 3 + 3
            elif kind is float or part is None:
                total += 25
            else:
                total += json_size(part, limit, memo) + 1
            if total > limit:
                break
        memo[id(value)] = total
    return memo[id(value)]


def json_text(value: Any, limit: int = MAX_SEQUENCE, memo: dict[int, int] | None = None) -> str:
    """Text of a value as JSON would write it: null, true/false, JSON for objects and lists.

    memo carries sizes measured before with the same limit, for values kept alive meanwhile.
    """
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return str(value)
    if json_size(value, limit, memo) > limit:
        raise ValueError(f"value too large to turn into text (limit {limit} characters)")
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > limit:
        raise ValueError(f"value too large to turn into text (limit {limit} characters)")
    return text


def text_bound(value: Any, digits: bool) -> int:
    """Most characters a %-format conversion of value writes, width and precision aside.

    digits: the format has a %d, %i, %u or %f, which write a float's every digit: '%d' % 1e308
    has 309 of them; otherwise a float's repr has at most 24 characters.
    """
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    return 330 if digits else 24
