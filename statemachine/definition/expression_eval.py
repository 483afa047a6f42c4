"""The evaluator: simpleeval, bounded and charged, over an explicit names mapping.

The one module that imports simpleeval. One ``Evaluator`` per evaluation, never shared between
threads or calls; every operator and function is charged to its ``expression_cost.Meter``, and
power, integer size, repetition, concatenation and ``%``-formatting are bounded. A tuple
evaluates to a list, as in JSON, so nothing an expression holds is ever hashed at a cost.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import simpleeval

from statemachine.definition import (
    expression_cost,
    expression_functions,
    expression_syntax,
    expression_values,
    issues,
)

MAX_INT_BITS = 10_000  # products and powers; below Python's int-to-str digit limit
MAX_FORMAT_WIDTH = 1_000  # width or precision in a %-format

_FORMAT = re.compile(r"%(?:%|(\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?)")
_DIGITS = re.compile(r"%[^%a-zA-Z]*[diufF]")

_OPERATORS = {k: v for k, v in simpleeval.DEFAULT_OPERATORS.items() if k in expression_syntax.OPS}


def describe(exc: BaseException) -> str:
    if isinstance(exc, simpleeval.InvalidExpression):
        return str(exc)
    known: dict[type[BaseException], str] = {ZeroDivisionError: "division by zero"}
    known[RecursionError] = "data nested too deeply"
    return known.get(type(exc)) or f"{type(exc).__name__}: {exc}"


class Evaluator(simpleeval.EvalWithCompoundTypes):  # type: ignore[misc]
    """One evaluation; never shared between threads or calls."""

    def __init__(self, source: str, names: Mapping[str, Any], spent: int = 0) -> None:
        self._source = source
        self.meter = expression_cost.Meter(source, spent)
        self._node_cost = expression_cost.NODE_COST
        ops = {**_OPERATORS, ast.Add: self._add, ast.Mult: self._mult}
        ops.update({ast.Mod: self._mod, ast.Pow: self._pow})
        ops = {
            op: self._costed(function, self.meter.operator_cost(op)) for op, function in ops.items()
        }
        super().__init__(operators=ops, functions={}, names=dict(names))
        self.functions.clear()  # calls go through _eval_call and expression_functions only

    def _fail(self, what: str) -> NoReturn:
        raise expression_values.error(self._source, what)

    def _costed(self, function: Callable[..., Any], cost: Callable[..., int]) -> Callable[..., Any]:
        """function, charged cost(*arguments) before it runs and its result's size after."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self.meter.spend(steps=cost(*args, *kwargs.values()) if kwargs else cost(*args))
            result = function(*args, **kwargs)
            if isinstance(result, float) and not math.isfinite(result):  # JSON has no inf/NaN
                self._fail(f"the result {result} is not a finite number")
            # e.g. a big int; the next step checks the budget
            self.meter.work += expression_cost.shallow(result)
            return result

        return run

    def _charged(self, built: Any) -> Any:
        """A literal or comprehension is charged the logical size of what it built."""
        self.meter.spend(steps=self.meter.weigh(built))
        return built

    def _eval_list(self, node: ast.List) -> Any:
        return self._charged(super()._eval_list(node))

    def _eval_dict(self, node: ast.Dict) -> Any:
        return self._charged(super()._eval_dict(node))

    def _eval_comprehension(self, node: ast.ListComp | ast.GeneratorExp | ast.DictComp) -> Any:
        # Inside, simpleeval looks a name up through one more scope per enclosing comprehension.
        self._node_cost += expression_cost.NEST_COST
        try:
            built = super()._eval_comprehension(node)
        finally:
            self._node_cost -= expression_cost.NEST_COST
        return self._charged(built)

    def _eval(self, node: ast.AST) -> Any:
        self.meter.work += self._node_cost
        if self.meter.work > expression_cost.MAX_WORK:
            self.meter.too_much()
        return super()._eval(node)

    def _eval_tuple(self, node: ast.Tuple) -> Any:
        # A tuple is a list, as in JSON: no value an expression holds is hashed at a cost
        # (a dict key or `in` on an object hashes scalars only; lists cannot be hashed).
        return self._charged([self._eval(item) for item in node.elts])

    def _add(self, a: Any, b: Any) -> Any:
        if isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple):
            self.meter.build(len(a) + len(b), self.meter.weigh(a) + self.meter.weigh(b))
        return a + b

    def _mult(self, a: Any, b: Any) -> Any:
        for seq, times in ((a, b), (b, a)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                times = max(times, 0)
                self.meter.build(len(seq) * times, self.meter.weigh(seq) * times)
                return seq * times
        if (
            isinstance(a, int)
            and isinstance(b, int)
            and a.bit_length() + b.bit_length() > MAX_INT_BITS
        ):
            self._fail(f"the product is too large (limit {MAX_INT_BITS} bits)")
        return a * b

    def _pow(self, a: Any, b: Any) -> Any:
        if isinstance(b, int | float) and abs(b) > expression_functions.MAX_EXPONENT:
            self._fail(f"exponent {b} is too large (limit {expression_functions.MAX_EXPONENT})")
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() * b > MAX_INT_BITS:
            self._fail(f"the power is too large (limit {MAX_INT_BITS} bits)")
        result = a**b
        if isinstance(result, complex):
            self._fail("the power is not a real number")
        return result

    def _mod(self, a: Any, b: Any) -> Any:
        if not isinstance(a, str):
            return a % b
        specs = _FORMAT.findall(a)  # (name, width, precision) of each conversion
        many = isinstance(b, list | tuple)  # (x, y) is a list here
        self.meter.spend(steps=expression_cost.SPEC_COST * (len(specs) + (len(b) if many else 1)))
        args = tuple(b) if many else (b,)
        if any(named for named, _, _ in specs):
            self._fail("%(name) formatting is not supported; use a template")
        sizes = [size for _, width, precision in specs for size in (width, precision) if size]
        if "*" in sizes:
            self._fail("'*' widths are not supported in %-formatting")
        numbers = list(map(int, sizes))
        if numbers and max(numbers) > MAX_FORMAT_WIDTH:
            self._fail(f"%-format width or precision above {MAX_FORMAT_WIDTH}")
        width = sum(numbers)
        if any(isinstance(arg, Mapping | list | tuple) for arg in args):
            self._fail("only strings and numbers can be %-formatted")
        # Bound the text before writing it: '%f' of 1e308 alone writes 316 characters.
        digits = _DIGITS.search(a) is not None
        self.meter.build(
            len(a) + width + sum(expression_values.text_bound(arg, digits) for arg in args)
        )
        self.meter.spend(*args)  # a big int's digits, squared
        result = a % args
        self.meter.build(len(result), expression_cost.TEXT_COST * len(result))
        return result

    def _check_disallowed_items(self, item: Any) -> None:
        # O(1) instead of simpleeval's walk of every container: names hold JSON data, and
        # nothing an expression can do yields a function or module.
        if callable(item) or isinstance(item, types.ModuleType):
            self._fail("functions and modules are not values")

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        hint = issues.did_you_mean(node.id, self.names)
        if node.id in expression_functions.FUNCTIONS:
            hint += f" ({node.id} is a function: call it as {node.id}(...))"
        self._fail(f"unknown name {node.id!r}{hint}")

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if isinstance(value, Mapping):
            return value.get(node.attr)  # a missing key reads as null, like JS undefined
        if value is None:
            self._fail(f"cannot read {node.attr!r} of null")
        kind = expression_values.kind_of(value)
        self._fail(f"cannot read .{node.attr} of {kind}: dot access reads object keys")

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, Mapping):
            return container.get(key)
        if not isinstance(container, list | tuple | str):
            self._fail(f"cannot index {expression_values.kind_of(container)}")
        if not isinstance(key, int | slice):
            self._fail(f"an index must be a whole number, not {expression_values.kind_of(key)}")
        if isinstance(key, slice):
            self.meter.spend(container)
        try:
            return container[key]
        except IndexError:
            self._fail(f"index {key} is out of range (length {len(container)})")

    def _eval_call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)  # checked when compiled
        args = [self._eval(a) for a in node.args]
        kwargs = {str(k.arg): self._eval(k.value) for k in node.keywords}
        name = node.func.id
        if name == "sorted" and args:  # n log n comparisons, each walking its two items
            self.meter.spend(
                steps=self.meter.weigh(args[0])
                * max(1, expression_cost.shallow(args[0])).bit_length()
            )
        function = expression_functions.FUNCTIONS[name]
        if name == "str":  # sizes of shared parts are measured once, as their weights are
            function = functools.partial(expression_functions.str_memoized, self.meter.sizes)
        if name in expression_functions.DEEP_FUNCTIONS:
            cost: Callable[..., int] = self.meter.deep_cost
        else:
            cost = self.meter.contains_cost if name == "contains" else expression_cost.shallow_cost
        result = self._costed(function, cost)(*args, **kwargs)
        if name == "str":  # json.dumps writes floats at ~30 ns a character
            self.meter.spend(steps=expression_cost.TEXT_COST * len(result))
        return result
