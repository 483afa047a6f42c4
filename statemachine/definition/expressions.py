"""Sandboxed expressions and ``${{ }}`` templates: compile once, evaluate against names.

An expression is compiled once: JavaScript-style operators are rewritten on tokens, the text is
parsed, and the tree is checked against allow-lists of node types and functions
(``expression_syntax``). It is evaluated against an explicit names mapping by a fresh evaluator
per call (``expression_eval``), within a deterministic work budget (``expression_cost``) and
bounds on power, integer size, repetition, concatenation and ``%``-formatting. Every failure
becomes ``ExpressionError``. The templates of one rendered value share one budget.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statemachine import errors
from statemachine.definition import (
    expression_cost,
    expression_eval,
    expression_syntax,
    expression_values,
)

MAX_LENGTH = 2_000  # characters of source
MAX_RESULT = 10_000_000  # estimated JSON size of a result or of an interpolated template

_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; immutable and safe to share between threads."""

    source: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)

    @property
    def tree(self) -> ast.expr:
        """The checked syntax tree, for static readers (the build-time flow check)."""
        return self._tree

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """The value of the expression; only ``names`` are visible. Raises ``ExpressionError``."""
        return self._evaluate(names, expression_cost.Budget())

    def _evaluate(self, names: Mapping[str, Any], budget: expression_cost.Budget) -> Any:
        evaluator = expression_eval.Evaluator(self.source, names, budget.spent)
        try:
            result = evaluator.eval(self.source, previously_parsed=self._tree)
            if expression_values.json_size(result, MAX_RESULT) > MAX_RESULT:
                raise expression_values.error(
                    self.source, f"the result is too large (limit {MAX_RESULT})"
                )
            return copy.deepcopy(result)  # never hand out the caller's own data
        except errors.ExpressionError:
            raise
        except Exception as exc:
            raise expression_values.error(self.source, expression_eval.describe(exc)) from exc
        finally:
            budget.spent = evaluator.meter.work

    def evaluate_condition(self, names: Mapping[str, Any]) -> bool:
        """Like ``evaluate``, but the result must be a real bool."""
        value = self.evaluate(names)
        if not isinstance(value, bool):
            message = f"condition {self.source!r} returned {expression_values.kind_of(value)}, expected true/false"
            raise errors.ExpressionError(message, expression=self.source)
        return value


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Check and parse an expression once; raises ``ExpressionError`` if it is not allowed."""
    if not isinstance(source, str):
        raise errors.ExpressionError(
            f"an expression must be a string, not {expression_values.kind_of(source)}"
        )
    text = source.strip()
    if not text:
        raise expression_values.error(source, "the expression is empty")
    if len(source) > MAX_LENGTH:
        raise expression_values.error(source[:80] + "...", f"longer than {MAX_LENGTH} characters")
    try:
        rewritten, edits = expression_syntax.rewrite(text)
    except Exception:  # e.g. tokenize.TokenError: the parser reports the problem better
        rewritten, edits = text, []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for `1 is 1`: we refuse it anyway
            tree = ast.parse(rewritten, mode="eval")
    except SyntaxError as exc:
        raise expression_syntax.syntax_error(source, rewritten, exc, edits) from None
    except Exception as exc:  # ValueError for NUL characters, RecursionError, MemoryError
        raise expression_values.error(
            source, f"cannot parse: {expression_eval.describe(exc)}"
        ) from None
    checker = expression_syntax.Checker(source)
    checker.visit(tree.body, 1, frozenset())
    return Expression(source, frozenset(checker.free), tree.body)


@dataclass(frozen=True, slots=True)
class Template:
    """A string with ``${{ expr }}`` parts; immutable."""

    source: str
    expressions: tuple[Expression, ...]
    names: frozenset[str]
    _texts: tuple[str, ...] = field(repr=False, compare=False)  # around and between the parts

    def render(self, names: Mapping[str, Any]) -> Any:
        """One part alone: its typed value; otherwise the string with every part interpolated."""
        return self._render(names, expression_cost.Budget())

    def _render(self, names: Mapping[str, Any], budget: expression_cost.Budget) -> Any:
        if len(self.expressions) == 1 and not "".join(self._texts).strip():
            return self.expressions[0]._evaluate(names, budget)
        pieces, size = [self._texts[0]], len(self._texts[0])
        for expression, after in zip(self.expressions, self._texts[1:], strict=True):
            value = expression._evaluate(names, budget)
            try:
                text = expression_values.json_text(value, MAX_RESULT - size)
            except Exception as exc:
                raise expression_values.error(
                    expression.source, f"cannot interpolate: {expression_eval.describe(exc)}"
                ) from exc
            budget.spent += expression_cost.TEXT_COST * len(
                text
            )  # the next part's first step checks it
            pieces += (text, after)
            size += len(text) + len(after)
            if size > MAX_RESULT:
                raise expression_values.error(
                    expression.source, f"the text is too long (limit {MAX_RESULT})"
                )
        return "".join(pieces)


def is_template(value: str) -> bool:
    """True when the string has a ``${{`` part (compile_template then checks it)."""
    return isinstance(value, str) and "${{" in value


@functools.lru_cache(maxsize=1024)
def compile_template(source: str) -> Template:
    """Compile every ``${{ expr }}`` part of a string; raises ``ExpressionError``."""
    texts: list[str] = []
    parts: list[Expression] = []
    done = 0
    for match in _TEMPLATE.finditer(source):
        texts.append(source[done : match.start()])
        parts.append(compile_expression(match.group(1).strip()))
        done = match.end()
    texts.append(source[done:])
    if "${{" in texts[-1]:
        raise errors.ExpressionError(f"template {source!r}: '${{{{' without a closing '}}}}'")
    if not parts:
        raise errors.ExpressionError(f"{source!r} is not a template: it has no '${{{{ }}}}' part")
    names = frozenset().union(*(p.names for p in parts))
    return Template(source, tuple(parts), names, tuple(texts))


def find_templates(value: Any) -> list[tuple[str, Template]]:
    """Every template string in nested dicts and lists, with its location (``items[1].x``)."""
    found: list[tuple[str, Template]] = []

    def walk(item: Any, where: str) -> None:
        if isinstance(item, str) and is_template(item):
            try:
                found.append((where, compile_template(item)))
            except errors.ExpressionError as exc:
                message = f"{where}: {exc}" if where else str(exc)
                raise errors.ExpressionError(message, expression=exc.expression) from None
        elif isinstance(item, Mapping):
            for key, child in item.items():
                walk(child, f"{where}.{key}" if where else str(key))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(item):
                walk(child, f"{where}[{index}]")

    walk(value, "")
    return found


def render_value(value: Any, names: Mapping[str, Any]) -> Any:
    """A deep copy of value with every template string rendered (tuples become lists).

    All its templates share one work budget (MAX_WORK), as one evaluation would.
    """
    return _render_value(value, names, expression_cost.Budget())


def _render_value(value: Any, names: Mapping[str, Any], budget: expression_cost.Budget) -> Any:
    if isinstance(value, str):
        return compile_template(value)._render(names, budget) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: _render_value(child, names, budget) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_render_value(child, names, budget) for child in value]
    return copy.deepcopy(value)
