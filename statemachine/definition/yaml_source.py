"""Safe YAML reading with positions: the layer the definition loader builds on.

Not ``yaml.safe_load``: it forgets positions, applies YAML 1.1 surprises (``on``/``yes``
booleans, dates, ``1:30`` == 90), keeps the last of duplicate keys and expands aliases without
limit. A ``SafeLoader`` subclass only composes nodes, checking the caps as they arrive; this module
builds the plain data itself, recording where every value and key was written.

Scalars follow the YAML 1.2 core schema: only ``true``/``True``/``TRUE`` (and the ``false`` forms)
are booleans; ``null``/``~``/empty are None; ints are decimal, ``0o`` or ``0x``; floats include
``.inf``/``.nan``; all else (``on``, ``2024-01-01``, ``1_000``) is a string. Tags other than
str/int/float/bool/null/seq/map are refused, and so are merge keys (``<<``), which hide where a
value came from: alias the whole value instead. Every failure is an ``errors.DefinitionError``.
"""

from __future__ import annotations

import copy
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, AnyStr, NoReturn

import yaml
import yaml.reader

from statemachine import errors
from statemachine.definition import issues

Loc = tuple[str | int, ...]

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 200_000

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _Y + "seq", _Y + "map", _Y + "merge"
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE}

_NULL_RE = re.compile(r"(?:~|null|Null|NULL|)\Z")
_BOOL_RE = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_INT_RE = re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
_FLOAT_RE = re.compile(
    r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)


@dataclass(frozen=True)
class SourceDocument:
    """Plain data plus where each piece was written, so later errors can point at the file."""

    data: Any
    path: str | None
    positions: Mapping[Loc, tuple[int, int]]
    key_positions: Mapping[Loc, tuple[int, int]]

    def position(self, loc: Loc) -> tuple[int, int]:
        """Where the value at ``loc`` starts; a missing value points at its nearest ancestor."""
        for end in range(len(loc), -1, -1):
            found = self.positions.get(loc[:end])
            if found is not None:
                return found
        return (0, 0)

    def key_position(self, loc: Loc) -> tuple[int, int]:
        """Where the key of the entry at ``loc`` starts (for 'unknown field' style errors)."""
        found = self.key_positions.get(loc)
        return found if found is not None else self.position(loc)


def parse_text(text: str, *, path: str | None = None) -> SourceDocument:
    """Read a definition from text; ``path`` only labels the errors."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        _fail(f"the definition is {size} bytes; the limit is {MAX_BYTES}", path, "too_large")
    return _parse(text, path)


def parse_file(path: str | os.PathLike[str]) -> SourceDocument:
    """Read a UTF-8 definition file, refusing an oversized one before reading it."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""  # it may still grow
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _fail(f"cannot read file: {reason}", name, "io")
    size = max(size, len(raw))
    if size > MAX_BYTES:
        _fail(f"the definition is {size} bytes; the limit is {MAX_BYTES}", name, "too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        _fail(message, name, "encoding", _text_pos(raw, exc.start))
    return _parse(text, name)


def _text_pos(text: AnyStr, index: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    return text.count(newline, 0, index) + 1, index - text.rfind(newline, 0, index)


def _pos(at: Any) -> tuple[int, int]:
    """1-based (line, column) of a yaml Mark; a ready tuple passes through; None is unknown."""
    if at is None or isinstance(at, tuple):
        return at or (1, 1)  # a whole-document problem (e.g. its size) points at its start
    return (at.line + 1, at.column + 1)


def _issue(message: str, path: str | None, code: str, at: Any, loc: Loc = ()) -> errors.Issue:
    return errors.Issue(message, issues.format_loc(loc), path, *_pos(at), code)


def _fail(message: str, path: str | None, code: str, at: Any = None) -> NoReturn:
    raise errors.DefinitionError([_issue(message, path, code, at)])


class _Loader(yaml.SafeLoader):
    """Composes nodes only (never constructs objects) and checks the caps while composing,
    so a deep or alias-heavy document fails before any recursion or expansion happens."""

    def __init__(self, text: str, path: str | None) -> None:
        super().__init__(text)
        self.path, self.depth, self.aliases, self.nodes = path, 0, 0, 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                _fail(f"more than {MAX_ALIASES} aliases", self.path, "too_large", event.start_mark)
            # a shallow copy shares the children but remembers where the alias was written
            alias = copy.copy(super().compose_node(parent, index))
            if alias is not None:
                alias.start_mark, alias.end_mark = event.start_mark, event.end_mark
            return alias
        self.nodes += 1
        if self.nodes > MAX_NODES:
            _fail(f"more than {MAX_NODES} values", self.path, "too_large", event.start_mark)
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                message = f"nesting is deeper than {MAX_DEPTH} levels"
                _fail(message, self.path, "too_deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        self.get_event()  # type: ignore[no-untyped-call]  # drop the stream start
        node = None if self.check_event(yaml.StreamEndEvent) else self.compose_document()
        if not self.check_event(yaml.StreamEndEvent):
            message = "a definition must be one YAML document, found another"
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            _fail(message, self.path, "multiple_documents", mark)
        return node


# YAML 1.2 core schema instead of SafeLoader's 1.1 resolvers (no yes/no/on/off, no timestamps)
_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    (_NULL, _NULL_RE, ["~", "n", "N", ""]),
    (_BOOL, _BOOL_RE, list("tTfF")),
    (_INT, _INT_RE, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE, list("-+0123456789.")),
    (_MERGE, re.compile(r"<<\Z"), ["<"]),
):
    _Loader.add_implicit_resolver(_tag, _regexp, _first)


def _compose(text: str, path: str | None) -> yaml.Node | None:
    """The document's node graph; every library error becomes a DefinitionError."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text, path)
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark, message = exc.problem_mark or exc.context_mark, exc.problem or exc.context
        if exc.problem and exc.context:
            line, column = _pos(exc.context_mark)
            where = f" (line {line}, column {column})" if (line, column) != _pos(mark) else ""
            message = f"{exc.context}{where}: {exc.problem}"
        _fail(f"invalid YAML: {message}", path, "syntax", mark)
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else 0xFFFD  # a code point
        at = _text_pos(text, exc.position if isinstance(exc.position, int) else 0)
        _fail(f"character U+{char:04X} is not allowed in YAML", path, "syntax", at)
    except yaml.YAMLError as exc:
        _fail(f"invalid YAML: {exc}", path, "syntax")
    finally:
        if loader is not None:
            loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _measure(root: yaml.Node, path: str | None) -> None:
    """Check the size and depth the data *would* have, without expanding aliases (billion laughs).

    Iterative, because chained aliases can nest far deeper than the composer saw. Collections
    are keyed by their children list, which an alias shares with its anchor.
    """
    done: dict[int, tuple[int, int]] = {}  # id(children) -> (values, depth)
    open_: set[int] = set()  # on the current path: meeting one again means a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key, kids = id(node.value), _children(node)
        if leaving:
            count, depth = 1, 1
            for kid in kids:
                measured = done[id(kid.value)] if isinstance(kid, yaml.CollectionNode) else (1, 0)
                count, depth = count + measured[0], max(depth, measured[1] + 1)
            if count > MAX_NODES:
                message = f"aliases expand to more than {MAX_NODES} values"
                _fail(message, path, "too_large", node.start_mark)
            if depth > MAX_DEPTH:
                message = f"nesting is deeper than {MAX_DEPTH} levels once aliases are expanded"
                _fail(message, path, "too_deep", node.start_mark)
            open_.discard(key)
            done[key] = (count, depth)
        elif key in open_:
            message = "an alias refers to a value that contains it"
            _fail(message, path, "recursive_alias", node.start_mark)
        elif key not in done:
            open_.add(key)
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if isinstance(kid, yaml.CollectionNode))


def _show(tag: str) -> str:
    return "!!" + tag[len(_Y) :] if tag.startswith(_Y) else tag


def _to_number(text: str, tag: str) -> int | float:
    """Raises ValueError past Python's int digit limit."""
    if tag == _FLOAT:
        lowered = text.lower()
        return float(lowered.replace(".", "") if lowered.endswith(("inf", "nan")) else text)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


class _Builder:
    """Turns composed nodes into plain data, recording positions and gathering every issue."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.key_positions: dict[Loc, tuple[int, int]] = {}
        self.issues: list[errors.Issue] = []

    def report(self, message: str, node: yaml.Node, loc: Loc, code: str) -> None:
        self.issues.append(_issue(message, self.path, code, node.start_mark, loc))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.positions[loc] = _pos(node.start_mark)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            return self.mapping(node, loc)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [self.build(kid, (*loc, i)) for i, kid in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag in _SCALAR_TAGS:
            return self.scalar(node, loc)
        message = f"tag {_show(node.tag)} is not allowed"
        if node.tag in _SCALAR_TAGS or node.tag in (_SEQ, _MAP):
            message += " on a " + ("scalar" if isinstance(node, yaml.ScalarNode) else "collection")
        self.report(message, node, loc, "tag")
        return None

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, loc)
            if key is None:
                continue
            if key in first:
                message = f"duplicate key {key!r} (first at line {_pos(first[key].start_mark)[0]})"
                self.report(message, key_node, (*loc, key), "duplicate_key")
                continue
            first[key] = key_node
            self.key_positions[(*loc, key)] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, (*loc, key))
        return out

    def key(self, node: yaml.Node, loc: Loc) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return str(node.value)
        if isinstance(node, yaml.ScalarNode) and node.tag == _MERGE:
            message = "merge keys (<<) are not supported; alias the whole value instead"
        elif isinstance(node, yaml.ScalarNode) and node.value:
            message = f"keys must be strings; quote it: '{node.value}'"
        else:
            message = "keys must be strings"
        self.report(message, node, loc, "key_type")
        return None

    def scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        text, tag = str(node.value), node.tag
        if tag in (_STR, _MERGE):  # "<<" outside a key is just text
            return text
        if tag == _NULL and _NULL_RE.match(text):
            return None
        if tag == _BOOL and _BOOL_RE.match(text):
            return text.lower() == "true"
        if (tag == _INT and _INT_RE.match(text)) or (tag == _FLOAT and _FLOAT_RE.match(text)):
            try:
                return _to_number(text, tag)
            except ValueError:
                self.report(f"the number {text[:20]}... has too many digits", node, loc, "number")
                return None
        self.report(f"{text[:40]!r} is not a valid {_show(tag)}", node, loc, "tag")
        return None


def _parse(text: str, path: str | None) -> SourceDocument:
    root = _compose(text, path)
    if root is None:
        _fail("empty document", path, "empty")
    if not isinstance(root, yaml.MappingNode):
        _fail("a workflow definition must be a mapping", path, "not_mapping", (1, 1))
    _measure(root, path)
    builder = _Builder(path)
    data = builder.build(root, ())
    if builder.issues:
        # an aliased value is built once per use: report each of its issues once
        unique = {(i.line, i.column, i.message): i for i in reversed(builder.issues)}
        raise errors.DefinitionError(sorted(unique.values(), key=lambda i: (i.line, i.column)))
    positions, key_positions = builder.positions, builder.key_positions
    return SourceDocument(
        data, path, types.MappingProxyType(positions), types.MappingProxyType(key_positions)
    )
