"""The engine's public calls say what they take: no ``Any`` in the annotations of ``Engine``'s
public methods (its constructor included), so that a caller's type checker catches a wrong
argument. Durations are ``Duration``, inputs and event data ``JSON``, metadata ``JSONObject``
(statemachine/vocabulary.py)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

from statemachine import Engine


def _has_any(hint: object) -> bool:
    if hint is typing.Any:
        return True
    if isinstance(hint, typing.TypeVar):
        bounds = [hint.__bound__] if hint.__bound__ is not None else []
        return any(_has_any(b) for b in [*bounds, *hint.__constraints__])
    return any(_has_any(arg) for arg in typing.get_args(hint) if arg is not Ellipsis)


def _with_any(fn: Callable[..., object]) -> list[str]:
    hints = typing.get_type_hints(fn)
    return [name for name, hint in hints.items() if _has_any(hint)]


def test_the_checker_sees_any() -> None:
    def loose(a: int, b: dict[str, typing.Any], c: list[Callable[..., typing.Any]]) -> None: ...

    assert _with_any(loose) == ["b", "c"]


def test_no_any_in_the_engines_public_signatures() -> None:
    public = {
        name: fn
        for name, fn in inspect.getmembers(Engine, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    }
    assert {"__init__", "start", "run_worker", "send_event", "update_metadata"} <= public.keys()
    loose = {name: found for name, fn in public.items() if (found := _with_any(fn))}
    assert not loose, f"Any in public signatures of Engine: {loose}"
