"""Sandboxed expressions and ``${{ }}`` templates: the one module that imports simpleeval.

An expression is compiled once: JavaScript-style operators are rewritten on tokens, the text is
parsed, and the tree is checked against allow-lists of node types and functions. It is evaluated
against an explicit names mapping by a fresh evaluator per call, with bounds on power, integer
size, repetition, concatenation and ``%``-formatting. Every failure becomes ``ExpressionError``.

Work is bounded, not only size: every evaluation has a budget of cost units (MAX_WORK, about
50 ms of CPU). A node costs NODE_COST; an operation that walks its operands (comparisons, ``in``,
``sorted``, ``str``...) costs their *logical* size, where a part shared by reference counts every
time it appears, so ``[[0] * 100] * 100`` weighs 10,000 although it holds 200 references; every
value built (repetition, concatenation, literals, comprehensions) is charged its logical size
too. Logical sizes are measured once per value and evaluation (memoized by identity), and the
measuring itself is charged. Budget checks are deterministic: the same expression on the same
data fails or succeeds the same way on every replay, whatever the machine's load. The templates
of one rendered value share one budget. A tuple evaluates to a list, as in JSON, so nothing an
expression holds is ever hashed at a cost.
"""

from __future__ import annotations

import ast
import copy
import functools
import io
import itertools
import json
import math
import re
import tokenize
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import simpleeval

from statemachine import errors
from statemachine.definition import issues

MAX_LENGTH = 2_000  # characters of source
MAX_DEPTH = 50  # nesting of the syntax tree
MAX_EXPONENT = 100
MAX_INT_BITS = 10_000  # products and powers; below Python's int-to-str digit limit
MAX_SEQUENCE = 100_000  # characters or items that one operation may build
MAX_WORK = 5_000_000  # cost units of one evaluation; a unit is about 10 ns of CPU: ~50 ms
NODE_COST = 100  # units per syntax node evaluated, comprehension bookkeeping included: ~1 µs
NEST_COST = 20  # more units per node, for each comprehension the node is in (see below)
WALK_COST = 8  # units per reference visited while measuring a value's logical size
CONTAINER_REFS = 8  # a container costs the walk as much as this many references
SPEC_COST = 50  # units per conversion and per argument of a %-format, checked one by one
TEXT_COST = 4  # units per character that str() or %-formatting writes (floats: ~30 ns each)
MAX_RESULT = 10_000_000  # estimated JSON size of a result or of an interpolated template
MAX_FORMAT_WIDTH = 1_000  # width or precision in a %-format

_JS_WORDS = {"true": "True", "false": "False", "null": "None"}
_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_FORMAT = re.compile(r"%(?:%|(\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?)")

_NODES: tuple[type[ast.AST], ...] = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp)
_NODES += (ast.Compare, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict)
_OPS: tuple[type[ast.AST], ...] = (ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add)
_OPS += (ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Eq, ast.NotEq, ast.Lt)
_OPS += (ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Load)
_REFUSED = {ast.NamedExpr: "assignment (:=)", ast.Starred: "*x", ast.Lambda: "lambda"}
_REFUSED |= {ast.Set: "sets (use a list)", ast.JoinedStr: "f-strings (use a ${{ }} template)"}
_REFUSED |= {
    ast.Is: "'is' (use ===)",
    ast.IsNot: "'is not' (use !==)",
    ast.BitAnd: "'&' (use 'and' or '&&')",
    ast.BitOr: "'|' (use 'or' or '||')",
}


def _error(source: str, what: str) -> errors.ExpressionError:
    return errors.ExpressionError(f"expression {source!r}: {what}", expression=source)


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"a boolean ({_text(value)})"
    if isinstance(value, int | float | str):
        return f"a {'string' if isinstance(value, str) else 'number'} ({value!r:.40})"
    if isinstance(value, Mapping | list | tuple):
        return "an object" if isinstance(value, Mapping) else "a list"
    return f"a {type(value).__name__}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, simpleeval.InvalidExpression):
        return str(exc)
    known: dict[type[BaseException], str] = {ZeroDivisionError: "division by zero"}
    known[RecursionError] = "data nested too deeply"
    return known.get(type(exc)) or f"{type(exc).__name__}: {exc}"


def _size(value: Any, limit: int, memo: dict[int, int] | None = None) -> int:
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
                total += _size(part, limit, memo) + 1
            if total > limit:
                break
        memo[id(value)] = total
    return memo[id(value)]


def _text(value: Any, limit: int = MAX_SEQUENCE, memo: dict[int, int] | None = None) -> str:
    """Text of a value as JSON would write it: null, true/false, JSON for objects and lists.

    memo carries sizes measured before with the same limit, for values kept alive meanwhile.
    """
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return str(value)
    if _size(value, limit, memo) > limit:
        raise ValueError(f"value too large to turn into text (limit {limit} characters)")
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > limit:
        raise ValueError(f"value too large to turn into text (limit {limit} characters)")
    return text


def _str(memo: dict[int, int], *args: Any) -> str:
    """The str() function, with an evaluation's memo of text sizes (see _Evaluator._eval_call)."""
    if len(args) != 1:
        raise TypeError(f"str() takes (any value), got ({', '.join(map(_kind, args))})")
    return _text(args[0], MAX_SEQUENCE, memo)


def _text_bound(value: Any, digits: bool) -> int:
    """Most characters a %-format conversion of value writes, width and precision aside.

    digits: the format has a %d, %i, %u or %f, which write a float's every digit: '%d' % 1e308
    has 309 of them; otherwise a float's repr has at most 24 characters.
    """
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    return 330 if digits else 24


_DIGITS = re.compile(r"%[^%a-zA-Z]*[diufF]")


_KIND_NAMES: dict[type[Any], str] = {Mapping: "object", str: "string", object: "any value"}


def _typed(name: str, function: Callable[..., Any], *kinds: type[Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if len(args) != len(kinds) or not all(map(isinstance, args, kinds)):
            wanted = ", ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            got = ", ".join(_kind(a) for a in args)
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


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f.__name__: f for f in (len, int, float, bool, abs, min, max, any, all, sorted)},
    "round": _round,
    "str": _typed("str", _text, object),
    "sum": _sum,
    "lower": _typed("lower", str.lower, str),
    "upper": _typed("upper", str.upper, str),
    "startswith": _typed("startswith", str.startswith, str, str),
    "endswith": _typed("endswith", str.endswith, str, str),
    "keys": _typed("keys", lambda obj: list(obj.keys()), Mapping),
    "values": _typed("values", lambda obj: list(obj.values()), Mapping),
    "contains": _typed("contains", lambda container, item: item in container, object, object),
}
_OPERATORS = {k: v for k, v in simpleeval.DEFAULT_OPERATORS.items() if k in _OPS}
# Operations that may walk the whole of their operands: they are charged logical sizes.
_COMPARISONS = frozenset({ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE})
_MEMBERSHIP = frozenset({ast.In, ast.NotIn})
_DEEP_FUNCTIONS = frozenset({"sorted", "min", "max", "sum", "str"})


_SMALL = 2**64  # ints below weigh 1


def _flat_weight(value: Any) -> int:
    """Logical size of a scalar in cost units; -1 for a list, tuple or mapping.

    A big int weighs its digit work squared: 10,000 bits take ~100 µs to turn into text.
    """
    kind = type(value)
    if kind is str:
        return 1 + len(value)
    if kind is float or kind is bool or value is None:
        return 1
    if kind is int and -_SMALL < value < _SMALL:
        return 1
    if kind is list or kind is dict or isinstance(value, list | tuple | Mapping):
        return -1
    if isinstance(value, str):
        return 1 + len(value)
    if isinstance(value, int):
        return 1 + (value.bit_length() // 64) ** 2 // 2
    return 1


def _shallow(value: Any) -> int:
    """Cost of an operation that touches a value's top level only (copy, truth, length)."""
    weight = _flat_weight(value)
    return len(value) if weight < 0 else weight


def _shallow_cost(*values: Any) -> int:
    return sum(map(_shallow, values))


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; immutable and safe to share between threads."""

    source: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """The value of the expression; only ``names`` are visible. Raises ``ExpressionError``."""
        return self._evaluate(names, _Budget())

    def _evaluate(self, names: Mapping[str, Any], budget: _Budget) -> Any:
        evaluator = _Evaluator(self, names, budget.spent)
        try:
            result = evaluator.eval(self.source, previously_parsed=self._tree)
            if _size(result, MAX_RESULT) > MAX_RESULT:
                raise _error(self.source, f"the result is too large (limit {MAX_RESULT})")
            return copy.deepcopy(result)  # never hand out the caller's own data
        except errors.ExpressionError:
            raise
        except Exception as exc:
            raise _error(self.source, _describe(exc)) from exc
        finally:
            budget.spent = evaluator._work

    def evaluate_condition(self, names: Mapping[str, Any]) -> bool:
        """Like ``evaluate``, but the result must be a real bool."""
        value = self.evaluate(names)
        if not isinstance(value, bool):
            message = f"condition {self.source!r} returned {_kind(value)}, expected true/false"
            raise errors.ExpressionError(message, expression=self.source)
        return value


@dataclass(slots=True)
class _Budget:
    """Work already done by the expressions of one rendered value: they share one MAX_WORK,
    so a step input with many ``${{ }}`` parts cannot hold the event loop many times over."""

    spent: int = 0


class _Evaluator(simpleeval.EvalWithCompoundTypes):  # type: ignore[misc]
    """One evaluation; never shared between threads or calls."""

    def __init__(self, expression: Expression, names: Mapping[str, Any], spent: int = 0) -> None:
        self._source = expression.source
        self._work = self._shared = spent
        self._node_cost = NODE_COST
        self._weights: dict[int, tuple[Any, int]] = {}  # id -> (the value, kept alive; weight)
        self._sizes: dict[int, int] = {}  # id -> text size, of values _weights keeps alive
        ops = {**_OPERATORS, ast.Add: self._add, ast.Mult: self._mult}
        ops.update({ast.Mod: self._mod, ast.Pow: self._pow})
        ops = {op: self._costed(function, self._operator_cost(op)) for op, function in ops.items()}
        super().__init__(operators=ops, functions={}, names=dict(names))
        self.functions.clear()  # calls go through _eval_call and _FUNCTIONS only

    def _fail(self, what: str) -> NoReturn:
        raise _error(self._source, what)

    def _spend(self, *operands: Any, steps: int = 0) -> None:
        # Deterministic CPU bound: a cost per node, plus the shallow size of every operand.
        self._work += steps + sum(map(_shallow, operands))
        if self._work > MAX_WORK:
            self._too_much()

    def _too_much(self) -> NoReturn:
        shared = " together with the other ${{ }} parts of its value" if self._shared else ""
        self._fail(f"takes too many steps{shared} (limit {MAX_WORK} units of work, about 50 ms)")

    def _weigh(self, value: Any) -> int:
        """Logical size: a part shared by reference counts every time it appears.

        Each container is walked once per evaluation (memoized by identity; the memo keeps it
        alive so its id is not reused), and the walk is charged WALK_COST a reference before it
        starts, so measuring never costs more than the budget allows. A value that contains
        itself ends in RecursionError, like ``==`` on it would.
        """
        weight = _flat_weight(value)
        return weight if weight >= 0 else self._weigh_container(value)

    def _weigh_container(self, value: Any) -> int:
        memo = self._weights
        known = memo.get(id(value))
        if known is not None:
            return known[1]
        if type(value) is dict or isinstance(value, Mapping):
            self._work += WALK_COST * (CONTAINER_REFS + 2 * len(value))
            parts: Iterable[Any] = itertools.chain(value, value.values())
        else:
            self._work += WALK_COST * (CONTAINER_REFS + len(value))
            parts = value
        if self._work > MAX_WORK:
            self._too_much()
        total = 1
        for part in parts:
            kind = type(part)
            if kind is str:
                total += 1 + len(part)
            elif kind is int:
                total += 1 if -_SMALL < part < _SMALL else _flat_weight(part)
            elif kind is dict or kind is list:
                total += self._weigh_container(part)
            elif kind is float or kind is bool or part is None:
                total += 1
            else:
                total += self._weigh(part)
        if self._work + total > MAX_WORK:
            self._too_much()
        memo[id(value)] = (value, total)
        return total

    def _build(self, size: int, weight: int | None = None) -> None:
        """Refuse a value longer than MAX_SEQUENCE, and charge its logical size (weight)."""
        if size > MAX_SEQUENCE:
            self._fail(f"would build a value of {size} items (limit {MAX_SEQUENCE})")
        self._spend(steps=size if weight is None else weight)

    def _costed(self, function: Callable[..., Any], cost: Callable[..., int]) -> Callable[..., Any]:
        """function, charged cost(*arguments) before it runs and its result's size after."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self._spend(steps=cost(*args, *kwargs.values()) if kwargs else cost(*args))
            result = function(*args, **kwargs)
            if isinstance(result, float) and not math.isfinite(result):  # JSON has no inf/NaN
                self._fail(f"the result {result} is not a finite number")
            self._work += _shallow(result)  # e.g. a big int; the next step checks the budget
            return result

        return run

    def _operator_cost(self, op: type[ast.AST]) -> Callable[..., int]:
        if op in _COMPARISONS:
            return self._compare_cost
        if op in _MEMBERSHIP:
            return self._in_cost
        return _shallow_cost

    def _deep_cost(self, *values: Any) -> int:
        """Operations that may walk all of their operands: sorted, min, max, sum, str."""
        return sum(map(self._weigh, values))

    def _compare_cost(self, a: Any, b: Any) -> int:
        """Two containers may be walked whole; a scalar and a container compare at once."""
        weight_a, weight_b = _flat_weight(a), _flat_weight(b)
        if weight_a < 0 and weight_b < 0:
            return self._weigh_container(a) + self._weigh_container(b)
        return max(weight_a, weight_b, 1) if weight_a < 0 or weight_b < 0 else weight_a + weight_b

    def _in_cost(self, item: Any, container: Any) -> int:
        """`item in container`: one hash in an object; in a list, a comparison per element."""
        weight = _flat_weight(item)
        if isinstance(container, Mapping):
            return max(weight, 1)  # a container item cannot be hashed: it fails at once
        if not isinstance(container, list | tuple):
            return max(weight, 1) + _shallow(container)  # a substring search, or a TypeError
        if weight >= 0:  # a scalar against each element walks no more than itself
            return 1 + len(container) * weight
        return self._weigh_container(item) + self._weigh_container(container)

    def _contains_cost(self, *args: Any) -> int:
        return self._in_cost(args[1], args[0]) if len(args) == 2 else 1

    def _charged(self, built: Any) -> Any:
        """A literal or comprehension is charged the logical size of what it built."""
        self._spend(steps=self._weigh(built))
        return built

    def _eval_list(self, node: ast.List) -> Any:
        return self._charged(super()._eval_list(node))

    def _eval_dict(self, node: ast.Dict) -> Any:
        return self._charged(super()._eval_dict(node))

    def _eval_comprehension(self, node: ast.ListComp | ast.GeneratorExp | ast.DictComp) -> Any:
        # Inside, simpleeval looks a name up through one more scope per enclosing comprehension.
        self._node_cost += NEST_COST
        try:
            built = super()._eval_comprehension(node)
        finally:
            self._node_cost -= NEST_COST
        return self._charged(built)

    def _eval(self, node: ast.AST) -> Any:
        self._work += self._node_cost
        if self._work > MAX_WORK:
            self._too_much()
        return super()._eval(node)

    def _eval_tuple(self, node: ast.Tuple) -> Any:
        # A tuple is a list, as in JSON: no value an expression holds is hashed at a cost
        # (a dict key or `in` on an object hashes scalars only; lists cannot be hashed).
        return self._charged([self._eval(item) for item in node.elts])

    def _add(self, a: Any, b: Any) -> Any:
        if isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple):
            self._build(len(a) + len(b), self._weigh(a) + self._weigh(b))
        return a + b

    def _mult(self, a: Any, b: Any) -> Any:
        for seq, times in ((a, b), (b, a)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                times = max(times, 0)
                self._build(len(seq) * times, self._weigh(seq) * times)
                return seq * times
        if (
            isinstance(a, int)
            and isinstance(b, int)
            and a.bit_length() + b.bit_length() > MAX_INT_BITS
        ):
            self._fail(f"the product is too large (limit {MAX_INT_BITS} bits)")
        return a * b

    def _pow(self, a: Any, b: Any) -> Any:
        if isinstance(b, int | float) and abs(b) > MAX_EXPONENT:
            self._fail(f"exponent {b} is too large (limit {MAX_EXPONENT})")
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
        self._spend(steps=SPEC_COST * (len(specs) + (len(b) if many else 1)))
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
        self._build(len(a) + width + sum(_text_bound(arg, digits) for arg in args))
        self._spend(*args)  # a big int's digits, squared
        result = a % args
        self._build(len(result), TEXT_COST * len(result))
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
        if node.id in _FUNCTIONS:
            hint += f" ({node.id} is a function: call it as {node.id}(...))"
        self._fail(f"unknown name {node.id!r}{hint}")

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if isinstance(value, Mapping):
            return value.get(node.attr)  # a missing key reads as null, like JS undefined
        if value is None:
            self._fail(f"cannot read {node.attr!r} of null")
        self._fail(f"cannot read .{node.attr} of {_kind(value)}: dot access reads object keys")

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, Mapping):
            return container.get(key)
        if not isinstance(container, list | tuple | str):
            self._fail(f"cannot index {_kind(container)}")
        if not isinstance(key, int | slice):
            self._fail(f"an index must be a whole number, not {_kind(key)}")
        if isinstance(key, slice):
            self._spend(container)
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
            self._spend(steps=self._weigh(args[0]) * max(1, _shallow(args[0])).bit_length())
        function = _FUNCTIONS[name]
        if name == "str":  # sizes of shared parts are measured once, as their weights are
            function = functools.partial(_str, self._sizes)
        if name in _DEEP_FUNCTIONS:
            cost: Callable[..., int] = self._deep_cost
        else:
            cost = self._contains_cost if name == "contains" else _shallow_cost
        result = self._costed(function, cost)(*args, **kwargs)
        if name == "str":  # json.dumps writes floats at ~30 ns a character
            self._spend(steps=TEXT_COST * len(result))
        return result


class _Checker:
    """Walks a parsed tree once: refuses what is not allowed, collects the free names."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.free: set[str] = set()

    def refuse(self, what: str) -> NoReturn:
        raise _error(self.source, what)

    def name(self, name: str) -> str:
        if name.startswith("_"):
            self.refuse(f"names starting with '_' are not allowed ({name})")
        return name

    def visit(self, node: ast.AST, depth: int, bound: frozenset[str]) -> None:
        if depth > MAX_DEPTH:
            self.refuse(f"nested too deeply (limit {MAX_DEPTH})")
        if isinstance(node, ast.expr_context | ast.operator | ast.boolop | ast.unaryop | ast.cmpop):
            if not isinstance(node, _OPS):
                self.refuse(f"not allowed: {_REFUSED.get(type(node), type(node).__name__)}")
            return
        children: list[ast.AST] = []
        if isinstance(node, ast.Name):
            if self.name(node.id) not in bound:
                self.free.add(node.id)
        elif isinstance(node, ast.Attribute):
            self.name(node.attr)
            children = [node.value]
        elif isinstance(node, ast.Call):
            children = self.call(node)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, str | int | float | bool | types.NoneType):
                self.refuse(f"{type(node.value).__name__} literals are not allowed")
        elif isinstance(node, ast.ListComp | ast.GeneratorExp | ast.DictComp):
            self.comprehension(node, depth, bound)
        elif isinstance(node, _NODES):
            if isinstance(node, ast.Dict) and None in node.keys:
                self.refuse("dict unpacking (**x) is not allowed")
            children = list(ast.iter_child_nodes(node))
        else:
            self.refuse(f"not allowed: {_REFUSED.get(type(node), type(node).__name__)}")
        for child in children:
            self.visit(child, depth + 1, bound)

    def call(self, node: ast.Call) -> list[ast.AST]:
        func = node.func
        if isinstance(func, ast.Attribute):
            self.name(func.attr)
            self.refuse(f"method calls are not allowed (.{func.attr}(...)); use a function")
        if not isinstance(func, ast.Name):
            self.refuse("only functions named directly can be called")
        if self.name(func.id) not in _FUNCTIONS:
            hint = issues.did_you_mean(func.id, _FUNCTIONS)
            self.refuse(f"unknown function {func.id!r}{hint}; known: {', '.join(_FUNCTIONS)}")
        if any(k.arg is None for k in node.keywords):
            self.refuse("keyword unpacking (**x) is not allowed")
        return [*node.args, *(k.value for k in node.keywords if self.name(str(k.arg)))]

    def targets(self, target: ast.expr) -> set[str]:
        if isinstance(target, ast.Name):
            return {self.name(target.id)}
        if not isinstance(target, ast.Tuple | ast.List):
            self.refuse("a comprehension can only assign plain names")
        return set().union(*(self.targets(t) for t in target.elts))

    def comprehension(
        self,
        node: ast.ListComp | ast.GeneratorExp | ast.DictComp,
        depth: int,
        bound: frozenset[str],
    ) -> None:
        inner = set(bound)
        for gen in node.generators:
            if gen.is_async:
                self.refuse("async comprehensions are not allowed")
            self.visit(gen.iter, depth + 1, frozenset(inner))
            inner |= self.targets(gen.target)
            for cond in gen.ifs:
                self.visit(cond, depth + 1, frozenset(inner))
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for part in parts:
            self.visit(part, depth + 1, frozenset(inner))


Edit = tuple[int, int, int, int]  # start and end in the rewritten text, then in the original


def _rewrite(text: str) -> tuple[str, list[Edit]]:
    """Rewrite JavaScript-style operators and words on tokens; string literals stay untouched."""
    starts = [0]
    for line in io.StringIO(text).readlines():
        starts.append(starts[-1] + len(line))
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    tokens = [t for t in tokens if not (t.type == tokenize.ERRORTOKEN and t.string.isspace())]

    def at(pos: tuple[int, int]) -> int:
        return starts[min(pos[0], len(starts)) - 1] + pos[1]

    replace: list[tuple[int, int, str]] = []
    previous, i = "", 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        joined = nxt is not None and nxt.start == tok.end
        if nxt and joined and tok.string in ("==", "!=") and nxt.string == "=":
            replace.append((at(tok.start), at(nxt.end), tok.string))
            i += 1
        elif nxt and joined and tok.string in ("&", "|") and nxt.string == tok.string:
            replace.append((at(tok.start), at(nxt.end), " and " if tok.string == "&" else " or "))
            i += 1
        elif tok.string == "!":
            replace.append((at(tok.start), at(tok.end), " not "))
        elif tok.type == tokenize.NAME and tok.string in _JS_WORDS and previous != ".":
            replace.append((at(tok.start), at(tok.end), _JS_WORDS[tok.string]))
        elif tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT) and tok.string:
            replace.append((at(tok.start), at(tok.end), " "))  # one logical line
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = tok.string
        i += 1
    pieces: list[str] = []
    edits: list[Edit] = []
    done = written = 0
    for start, end, new in replace:
        new = new.lstrip() if start == 0 else new
        pieces.append(text[done:start])
        written += start - done
        edits.append((written, written + len(new), start, end))
        pieces.append(new)
        written += len(new)
        done = end
    pieces.append(text[done:])
    return "".join(pieces), edits


def _syntax_error(source: str, rewritten: str, exc: SyntaxError, edits: list[Edit]) -> Exception:
    if not exc.lineno or not exc.offset:
        return _error(source, f"syntax error at the end: {exc.msg}")
    lines = io.StringIO(rewritten).readlines()
    pos = sum(len(x) for x in lines[: exc.lineno - 1]) + exc.offset - 1
    where = pos
    for new_start, new_end, old_start, old_end in edits:  # back to the author's text
        if pos < new_start:
            break
        where = old_start if pos < new_end else pos - new_end + old_end
    where = min(where + len(source) - len(source.lstrip()), len(source))
    column = f"column {where - source.rfind(chr(10), 0, where)}"
    if "\n" in source.strip():
        column = f"line {source.count(chr(10), 0, where) + 1}, {column}"
    return _error(source, f"syntax error at {column}: {exc.msg}")


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Check and parse an expression once; raises ``ExpressionError`` if it is not allowed."""
    if not isinstance(source, str):
        raise errors.ExpressionError(f"an expression must be a string, not {_kind(source)}")
    text = source.strip()
    if not text:
        raise _error(source, "the expression is empty")
    if len(source) > MAX_LENGTH:
        raise _error(source[:80] + "...", f"longer than {MAX_LENGTH} characters")
    try:
        rewritten, edits = _rewrite(text)
    except Exception:  # e.g. tokenize.TokenError: the parser reports the problem better
        rewritten, edits = text, []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for `1 is 1`: we refuse it anyway
            tree = ast.parse(rewritten, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(source, rewritten, exc, edits) from None
    except Exception as exc:  # ValueError for NUL characters, RecursionError, MemoryError
        raise _error(source, f"cannot parse: {_describe(exc)}") from None
    checker = _Checker(source)
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
        return self._render(names, _Budget())

    def _render(self, names: Mapping[str, Any], budget: _Budget) -> Any:
        if len(self.expressions) == 1 and not "".join(self._texts).strip():
            return self.expressions[0]._evaluate(names, budget)
        pieces, size = [self._texts[0]], len(self._texts[0])
        for expression, after in zip(self.expressions, self._texts[1:], strict=True):
            value = expression._evaluate(names, budget)
            try:
                text = _text(value, MAX_RESULT - size)
            except Exception as exc:
                raise _error(expression.source, f"cannot interpolate: {_describe(exc)}") from exc
            budget.spent += TEXT_COST * len(text)  # the next part's first step checks it
            pieces += (text, after)
            size += len(text) + len(after)
            if size > MAX_RESULT:
                raise _error(expression.source, f"the text is too long (limit {MAX_RESULT})")
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
    return _render_value(value, names, _Budget())


def _render_value(value: Any, names: Mapping[str, Any], budget: _Budget) -> Any:
    if isinstance(value, str):
        return compile_template(value)._render(names, budget) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: _render_value(child, names, budget) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_render_value(child, names, budget) for child in value]
    return copy.deepcopy(value)
