"""Expression syntax: JavaScript-style operators rewritten on tokens, and the allow-list check.

An expression is Python's expression grammar with ``===``, ``&&``, ``!``, ``true``/``null`` and
the like rewritten first (string literals untouched), and a syntax error is reported at the
author's own column. ``Checker`` walks the parsed tree once, refusing every node type, operator
and function not on its lists, and collects the free names.
"""

from __future__ import annotations

import ast
import io
import tokenize
import types
from typing import NoReturn

from statemachine.definition import expression_functions, expression_values, issues

MAX_DEPTH = 50  # nesting of the syntax tree

_JS_WORDS = {"true": "True", "false": "False", "null": "None"}

_NODES: tuple[type[ast.AST], ...] = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp)
_NODES += (ast.Compare, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict)
OPS: tuple[type[ast.AST], ...] = (ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add)
OPS += (ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Eq, ast.NotEq, ast.Lt)
OPS += (ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Load)
_REFUSED = {ast.NamedExpr: "assignment (:=)", ast.Starred: "*x", ast.Lambda: "lambda"}
_REFUSED |= {ast.Set: "sets (use a list)", ast.JoinedStr: "f-strings (use a ${{ }} template)"}
_REFUSED |= {
    ast.Is: "'is' (use ===)",
    ast.IsNot: "'is not' (use !==)",
    ast.BitAnd: "'&' (use 'and' or '&&')",
    ast.BitOr: "'|' (use 'or' or '||')",
}


class Checker:
    """Walks a parsed tree once: refuses what is not allowed, collects the free names."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.free: set[str] = set()

    def refuse(self, what: str) -> NoReturn:
        raise expression_values.error(self.source, what)

    def name(self, name: str) -> str:
        if name.startswith("_"):
            self.refuse(f"names starting with '_' are not allowed ({name})")
        return name

    def visit(self, node: ast.AST, depth: int, bound: frozenset[str]) -> None:
        if depth > MAX_DEPTH:
            self.refuse(f"nested too deeply (limit {MAX_DEPTH})")
        if isinstance(node, ast.expr_context | ast.operator | ast.boolop | ast.unaryop | ast.cmpop):
            if not isinstance(node, OPS):
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
        if self.name(func.id) not in expression_functions.FUNCTIONS:
            hint = issues.did_you_mean(func.id, expression_functions.FUNCTIONS)
            self.refuse(
                f"unknown function {func.id!r}{hint}; known: {', '.join(expression_functions.FUNCTIONS)}"
            )
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


def rewrite(text: str) -> tuple[str, list[Edit]]:
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


def syntax_error(source: str, rewritten: str, exc: SyntaxError, edits: list[Edit]) -> Exception:
    if not exc.lineno or not exc.offset:
        return expression_values.error(source, f"syntax error at the end: {exc.msg}")
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
    return expression_values.error(source, f"syntax error at {column}: {exc.msg}")
