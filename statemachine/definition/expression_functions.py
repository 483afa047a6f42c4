"""The functions an expression may call, by name; nothing else can be called.

Each takes JSON values only and says which it wanted when given others; those that may walk
the whole of their arguments are listed in ``DEEP_FUNCTIONS`` and charged for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from statemachine.definition import expression_values

MAX_EXPONENT = 100


def str_memoized(memo: dict[int, int], *args: Any) -> str:
    """The str() function, with an evaluation's memo of text sizes (see
    ``expression_eval.Evaluator._eval_call``)."""
    if len(args) != 1:
        raise TypeError(
            f"str() takes (any value), got ({', '.join(map(expression_values.kind_of, args))})"
        )
    return expression_values.json_text(args[0], expression_values.MAX_SEQUENCE, memo)


_KIND_NAMES: dict[type[Any], str] = {Mapping: "object", str: "string", object: "any value"}


def _typed(name: str, function: Callable[..., Any], *kinds: type[Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if len(args) != len(kinds) or not all(map(isinstance, args, kinds)):
            wanted = ", ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            got = ", ".join(expression_values.kind_of(a) for a in args)
            raise TypeError(f"{name}() takes ({wanted}), got ({got})")
        return function(*args)

    return call


def _sum(values: Iterable[Any], start: Any = 0) -> Any:
    # Numbers only (summing lists would be quadratic): a number start refuses any other item.
    if not isinstance(start, int | float):
        raise TypeError("sum() adds numbers only")
    try:
        return sum(values, start)
    except TypeError:
        raise TypeError("sum() adds numbers only") from None


def _round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_EXPONENT:  # round(1, -10**9) never ends
        raise ValueError(f"round() takes at most {MAX_EXPONENT} digits")
    return round(number, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f.__name__: f for f in (len, int, float, bool, abs, min, max, any, all, sorted)},
    "round": _round,
    "str": _typed("str", expression_values.json_text, object),
    "sum": _sum,
    "lower": _typed("lower", str.lower, str),
    "upper": _typed("upper", str.upper, str),
    "startswith": _typed("startswith", str.startswith, str, str),
    "endswith": _typed("endswith", str.endswith, str, str),
    "keys": _typed("keys", lambda obj: list(obj.keys()), Mapping),
    "values": _typed("values", lambda obj: list(obj.values()), Mapping),
    "contains": _typed("contains", lambda container, item: item in container, object, object),
}
DEEP_FUNCTIONS = frozenset({"sorted", "min", "max", "sum", "str"})
