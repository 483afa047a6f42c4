"""The work budget of an evaluation: what each step of it costs, in deterministic units.

Work is bounded, not only size: every evaluation has a budget of cost units (MAX_WORK, about
50 ms of CPU). A node costs NODE_COST; an operation that walks its operands (comparisons, ``in``,
``sorted``, ``str``...) costs their *logical* size, where a part shared by reference counts every
time it appears, so ``[[0] * 100] * 100`` weighs 10,000 although it holds 200 references; every
value built (repetition, concatenation, literals, comprehensions) is charged its logical size
too. Logical sizes are measured once per value and evaluation (memoized by identity), and the
measuring itself is charged. Budget checks are deterministic: the same expression on the same
data fails or succeeds the same way on every replay, whatever the machine's load. The templates
of one rendered value share one budget.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from statemachine.definition import expression_values

MAX_WORK = 5_000_000  # cost units of one evaluation; a unit is about 10 ns of CPU: ~50 ms
NODE_COST = 100  # units per syntax node evaluated, comprehension bookkeeping included: ~1 µs
NEST_COST = 20  # more units per node, for each comprehension the node is in
WALK_COST = 8  # units per reference visited while measuring a value's logical size
CONTAINER_REFS = 8  # a container costs the walk as much as this many references
SPEC_COST = 50  # units per conversion and per argument of a %-format, checked one by one
TEXT_COST = 4  # units per character that str() or %-formatting writes (floats: ~30 ns each)

#: Operations that may walk the whole of their operands: they are charged logical sizes.
COMPARISONS = frozenset({ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE})
MEMBERSHIP = frozenset({ast.In, ast.NotIn})

_SMALL = 2**64  # ints below weigh 1


def flat_weight(value: Any) -> int:
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


def shallow(value: Any) -> int:
    """Cost of an operation that touches a value's top level only (copy, truth, length)."""
    weight = flat_weight(value)
    return len(value) if weight < 0 else weight


def shallow_cost(*values: Any) -> int:
    return sum(map(shallow, values))


@dataclass(slots=True)
class Budget:
    """Work already done by the expressions of one rendered value: they share one MAX_WORK,
    so a step input with many ``${{ }}`` parts cannot hold the event loop many times over."""

    spent: int = 0


class Meter:
    """The work of one evaluation so far; raises ``ExpressionError`` once past MAX_WORK.

    ``spent`` is the work of the other ``${{ }}`` parts of the same value, already done.
    """

    def __init__(self, source: str, spent: int = 0) -> None:
        self.source = source
        self.work = self.shared = spent
        self._weights: dict[int, tuple[Any, int]] = {}  # id -> (the value, kept alive; weight)
        self.sizes: dict[int, int] = {}  # id -> text size, of values _weights keeps alive

    def fail(self, what: str) -> NoReturn:
        raise expression_values.error(self.source, what)

    def spend(self, *operands: Any, steps: int = 0) -> None:
        # Deterministic CPU bound: a cost per node, plus the shallow size of every operand.
        self.work += steps + sum(map(shallow, operands))
        if self.work > MAX_WORK:
            self.too_much()

    def too_much(self) -> NoReturn:
        shared = " together with the other ${{ }} parts of its value" if self.shared else ""
        self.fail(f"takes too many steps{shared} (limit {MAX_WORK} units of work, about 50 ms)")

    def weigh(self, value: Any) -> int:
        """Logical size: a part shared by reference counts every time it appears.

        Each container is walked once per evaluation (memoized by identity; the memo keeps it
        alive so its id is not reused), and the walk is charged WALK_COST a reference before it
        starts, so measuring never costs more than the budget allows. A value that contains
        itself ends in RecursionError, like ``==`` on it would.
        """
        weight = flat_weight(value)
        return weight if weight >= 0 else self.weigh_container(value)

    def weigh_container(self, value: Any) -> int:
        memo = self._weights
        known = memo.get(id(value))
        if known is not None:
            return known[1]
        if type(value) is dict or isinstance(value, Mapping):
            self.work += WALK_COST * (CONTAINER_REFS + 2 * len(value))
            parts: Iterable[Any] = itertools.chain(value, value.values())
        else:
            self.work += WALK_COST * (CONTAINER_REFS + len(value))
            parts = value
        if self.work > MAX_WORK:
            self.too_much()
        total = 1
        for part in parts:
            kind = type(part)
            if kind is str:
                total += 1 + len(part)
            elif kind is int:
                total += 1 if -_SMALL < part < _SMALL else flat_weight(part)
            elif kind is dict or kind is list:
                total += self.weigh_container(part)
            elif kind is float or kind is bool or part is None:
                total += 1
            else:
                total += self.weigh(part)
        if self.work + total > MAX_WORK:
            self.too_much()
        memo[id(value)] = (value, total)
        return total

    def build(self, size: int, weight: int | None = None) -> None:
        """Refuse a value longer than MAX_SEQUENCE, and charge its logical size (weight)."""
        if size > expression_values.MAX_SEQUENCE:
            self.fail(
                f"would build a value of {size} items (limit {expression_values.MAX_SEQUENCE})"
            )
        self.spend(steps=size if weight is None else weight)

    def operator_cost(self, op: type[ast.AST]) -> Callable[..., int]:
        if op in COMPARISONS:
            return self.compare_cost
        if op in MEMBERSHIP:
            return self.in_cost
        return shallow_cost

    def deep_cost(self, *values: Any) -> int:
        """Operations that may walk all of their operands: sorted, min, max, sum, str."""
        return sum(map(self.weigh, values))

    def compare_cost(self, a: Any, b: Any) -> int:
        """Two containers may be walked whole; a scalar and a container compare at once."""
        weight_a, weight_b = flat_weight(a), flat_weight(b)
        if weight_a < 0 and weight_b < 0:
            return self.weigh_container(a) + self.weigh_container(b)
        return max(weight_a, weight_b, 1) if weight_a < 0 or weight_b < 0 else weight_a + weight_b

    def in_cost(self, item: Any, container: Any) -> int:
        """`item in container`: one hash in an object; in a list, a comparison per element."""
        weight = flat_weight(item)
        if isinstance(container, Mapping):
            return max(weight, 1)  # a container item cannot be hashed: it fails at once
        if not isinstance(container, list | tuple):
            return max(weight, 1) + shallow(container)  # a substring search, or a TypeError
        if weight >= 0:  # a scalar against each element walks no more than itself
            return 1 + len(container) * weight
        return self.weigh_container(item) + self.weigh_container(container)

    def contains_cost(self, *args: Any) -> int:
        return self.in_cost(args[1], args[0]) if len(args) == 2 else 1
