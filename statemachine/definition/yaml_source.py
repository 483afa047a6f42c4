"""Safe YAML reading with positions: the layer the definition loader builds on.

Not ``yaml.safe_load``: it forgets positions, applies YAML 1.1 surprises (``on``/``yes``
booleans, dates, ``1:30`` == 90), keeps the last of duplicate keys and expands aliases without
limit. This module composes the parser's events into nodes itself, without recursion and
checking the caps as they arrive, then builds the plain data, recording where every value and key
was written.

The events come from libyaml when PyYAML was built with it (its pure-Python parser takes several
times longer). What libyaml reads otherwise than PyYAML (tabs, odd tags, some empty values; see
``_compose``), and every document libyaml refuses, is read again by PyYAML's parser, so the data,
the positions and the error messages are the same with or without libyaml.

Scalars follow the YAML 1.2 core schema: only ``true``/``True``/``TRUE`` (and the ``false`` forms)
are booleans; ``null``/``~``/empty are None; ints are decimal, ``0o`` or ``0x``; floats include
``.inf``/``.nan``; all else (``on``, ``2024-01-01``, ``1_000``) is a string. Tags other than
str/int/float/bool/null/seq/map are refused, and so are merge keys (``<<``), which hide where a
value came from: alias the whole value instead. Every failure is an ``errors.DefinitionError``.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, AnyStr, NoReturn, Protocol

import yaml
import yaml.composer
import yaml.parser
import yaml.reader
import yaml.scanner

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


class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python reader, scanner and parser: used when libyaml is missing, and to
    word the error of a document libyaml refused (libyaml's messages are terser)."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


class _Events(Protocol):
    """What the composer needs of a parser: ``_PyParser`` and libyaml's ``CParser`` both have it."""

    def get_event(self) -> Any: ...
    def peek_event(self) -> Any: ...
    def check_event(self, *choices: type[yaml.Event]) -> bool: ...
    def dispose(self) -> None: ...


_CParser: Callable[[str], _Events] | None
try:  # libyaml parses the same events as the pure-Python parser, in C
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

# the characters PyYAML's reader and libyaml's allow; PyYAML reports the first other one
_NON_PRINTABLE = re.compile(
    r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]"
)

# what PyYAML refuses and libyaml takes: tabs between tokens (PyYAML only allows spaces), a BOM
# past the start, a comment right after a block scalar's header (``|#``)
_PYYAML_ONLY = re.compile(r"\t|.\ufeff|[|>][-+0-9]*#", re.S)
_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")

# YAML 1.2 core schema instead of SafeLoader's 1.1 resolvers (no yes/no/on/off, no timestamps):
# the first character of a plain scalar -> the (tag, pattern) pairs to try, in order
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _tag, _regexp, _first in (
    (_NULL, _NULL_RE, ["~", "n", "N", ""]),
    (_BOOL, _BOOL_RE, list("tTfF")),
    (_INT, _INT_RE, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE, list("-+0123456789.")),
    (_MERGE, re.compile(r"<<\Z"), ["<"]),
):
    for _char in _first:
        _IMPLICIT.setdefault(_char, []).append((_tag, _regexp))

# A composed node is a plain tuple (kind, tag, value, (line, column)), cheaper than yaml.Node
# and its two marks: a scalar's value is its text, a sequence's the list of its item nodes, a
# mapping's the flat list key, value, key, value... An alias is a copy of its anchor's tuple
# with the alias's own position, sharing the anchor's list.
_SCALAR, _SEQUENCE, _MAPPING = 0, 1, 2
_SCALAR_EVENT, _ALIAS = yaml.ScalarEvent, yaml.AliasEvent
_SEQUENCE_START, _SEQUENCE_END = yaml.SequenceStartEvent, yaml.SequenceEndEvent
_MAPPING_START, _MAPPING_END = yaml.MappingStartEvent, yaml.MappingEndEvent
_Node = tuple[int, str, Any, tuple[int, int]]


def _resolve(value: str) -> str:
    """The tag of an untagged plain scalar."""
    for tag, regexp in _IMPLICIT.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return _STR


class _Unsure(yaml.YAMLError):
    """libyaml reached a spot PyYAML may read differently: let PyYAML read the document."""


def _compose_events(
    parser: _Events, path: str | None, careful: str | None = None
) -> tuple[_Node | None, int]:
    """The single document's nodes and how many aliases it used. Never constructs objects and
    never recurses; the caps are checked as the events arrive, so a deep or alias-heavy
    document fails early.

    ``careful`` is the text, when libyaml parses it: it raises ``_Unsure`` where libyaml and
    PyYAML are known to differ (a tag, libyaml taking odd ones such as ``!.!``, or see
    ``_read_apart``), so that both give the same data, positions and errors.
    """
    get = parser.get_event
    get()  # the stream start
    if parser.check_event(yaml.StreamEndEvent):
        return None, 0
    get()  # the document start
    anchors: dict[str, tuple[_Node, Any]] = {}  # anchor -> its node and where it was set
    open_: list[list[_Node]] = []  # the children of the collections being composed
    flows = [False]  # whether each is written in flow style (the first: the document)
    nodes = aliases = 0
    while True:
        event = get()
        kind = type(event)
        if kind is _MAPPING_END or kind is _SEQUENCE_END:
            open_.pop()
            flows.pop()
            if not open_:
                break
            continue
        mark = event.start_mark
        at = (mark.line + 1, mark.column + 1)
        if kind is _ALIAS:
            aliases += 1
            if aliases > MAX_ALIASES:
                _fail(f"more than {MAX_ALIASES} aliases", path, "too_large", mark)
            if event.anchor not in anchors:
                problem = f"found undefined alias {event.anchor!r}"
                raise yaml.composer.ComposerError(None, None, problem, mark)
            target = anchors[event.anchor][0]
            node: _Node = (target[0], target[1], target[2], at)
        else:
            nodes += 1
            if nodes > MAX_NODES:
                _fail(f"more than {MAX_NODES} values", path, "too_large", mark)
            anchor, tag = event.anchor, event.tag
            if kind is _SCALAR_EVENT:
                value = event.value
                plain = not event.style
                if careful is not None and (
                    tag is not None
                    or (
                        plain
                        and (flows[-1] or not value)
                        and _read_apart(value, flows[-1], mark, careful)
                    )
                ):
                    raise _Unsure
                if tag is None:
                    tag = _resolve(value) if event.implicit[0] else _STR
                elif tag == "!":  # PyYAML resolves it as plain, quoted or empty alike
                    tag = _resolve(value)
                node = (_SCALAR, tag, value, at)
            else:
                if len(open_) >= MAX_DEPTH:
                    _fail(f"nesting is deeper than {MAX_DEPTH} levels", path, "too_deep", mark)
                if careful is not None and tag is not None:
                    raise _Unsure
                if tag is None or tag == "!":
                    tag = _SEQ if kind is _SEQUENCE_START else _MAP
                node = (_SEQUENCE if kind is _SEQUENCE_START else _MAPPING, tag, [], at)
            if anchor is not None:
                if anchor in anchors:
                    raise yaml.composer.ComposerError(
                        f"found duplicate anchor {anchor!r}; first occurrence",
                        anchors[anchor][1],
                        "second occurrence",
                        mark,
                    )
                anchors[anchor] = (node, mark)
        if open_:
            open_[-1].append(node)
        else:
            root = node
        if kind is _SEQUENCE_START or kind is _MAPPING_START:
            open_.append(node[2])
            flows.append(bool(event.flow_style))
        elif not open_:
            break
    get()  # the document end
    if not parser.check_event(yaml.StreamEndEvent):
        message = "a definition must be one YAML document, found another"
        _fail(message, path, "multiple_documents", parser.peek_event().start_mark)
    return root, aliases


def _read_apart(value: str, in_flow: bool, mark: Any, text: str) -> bool:
    """A plain scalar libyaml reads otherwise than PyYAML: in ``{}``/``[]`` one holding a ``?``
    (PyYAML ends the scalar there and refuses the rest) or an empty one (``{a: }``: libyaml
    places it at the next token, PyYAML after the ``:``); an empty one at the end of a text whose
    last line has no line break (libyaml adds one, PyYAML not)."""
    if in_flow:
        return not value or "?" in value
    at_end = mark.index >= len(text) - text.startswith("\ufeff")  # the index skips a BOM
    return not value and at_end and not text.endswith(_BREAKS)


def _compose(text: str, path: str | None) -> tuple[_Node | None, int]:
    """The document's nodes, parsed by libyaml when it is there and the text has none of what
    libyaml reads differently (or PyYAML refuses and libyaml not), else by PyYAML. Every error
    of the library is worded by PyYAML, which says more, and becomes a DefinitionError."""
    if _CParser is not None and not _NON_PRINTABLE.search(text) and not _PYYAML_ONLY.search(text):
        parser = _CParser(text)
        try:
            return _compose_events(parser, path, text)
        except yaml.YAMLError:
            pass  # read it again below, for PyYAML's wording of the same problem
        finally:
            parser.dispose()
    py: _PyParser | None = None
    try:
        py = _PyParser(text)
        return _compose_events(py, path)
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
        if py is not None:
            py.dispose()


def _measure(root: _Node, path: str | None) -> None:
    """Check the size and depth the data *would* have, without expanding aliases (billion laughs).

    Iterative, because chained aliases can nest far deeper than the composer saw. Collections
    are keyed by their children list, which an alias shares with its anchor.
    """
    done: dict[int, tuple[int, int]] = {}  # id(children) -> (values, depth)
    open_: set[int] = set()  # on the current path: meeting one again means a cycle
    stack: list[tuple[_Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        kids: list[_Node] = node[2]
        key = id(kids)
        if leaving:
            count, depth = 1, 1
            for kid in kids:
                measured = done[id(kid[2])] if kid[0] != _SCALAR else (1, 0)
                count, depth = count + measured[0], max(depth, measured[1] + 1)
            if count > MAX_NODES:
                message = f"aliases expand to more than {MAX_NODES} values"
                _fail(message, path, "too_large", node[3])
            if depth > MAX_DEPTH:
                message = f"nesting is deeper than {MAX_DEPTH} levels once aliases are expanded"
                _fail(message, path, "too_deep", node[3])
            open_.discard(key)
            done[key] = (count, depth)
        elif key in open_:
            message = "an alias refers to a value that contains it"
            _fail(message, path, "recursive_alias", node[3])
        elif key not in done:
            open_.add(key)
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if kid[0] != _SCALAR)


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

    def report(self, message: str, node: _Node, loc: Loc, code: str) -> None:
        self.issues.append(_issue(message, self.path, code, node[3], loc))

    def build(self, node: _Node, loc: Loc) -> Any:
        kind, tag, value, self.positions[loc] = node
        if kind == _SCALAR and tag == _STR:  # the usual case first
            return value
        if kind == _MAPPING and tag == _MAP:
            return self.mapping(value, loc)
        if kind == _SEQUENCE and tag == _SEQ:
            return [self.build(kid, (*loc, i)) for i, kid in enumerate(value)]
        if kind == _SCALAR and tag in _SCALAR_TAGS:
            return self.scalar(node, loc)
        message = f"tag {_show(tag)} is not allowed"
        if tag in _SCALAR_TAGS or tag in (_SEQ, _MAP):
            message += " on a " + ("scalar" if kind == _SCALAR else "collection")
        self.report(message, node, loc, "tag")
        return None

    def mapping(self, children: list[_Node], loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs = iter(children)
        for key_node, value_node in zip(pairs, pairs, strict=True):
            key = self.key(key_node, loc)
            if key is None:
                continue
            here = (*loc, key)
            if key in out:
                message = f"duplicate key {key!r} (first at line {self.key_positions[here][0]})"
                self.report(message, key_node, here, "duplicate_key")
                continue
            self.key_positions[here] = key_node[3]
            out[key] = self.build(value_node, here)
        return out

    def key(self, node: _Node, loc: Loc) -> str | None:
        kind, tag, value, _ = node
        if kind == _SCALAR and tag == _STR:
            return str(value)
        if kind == _SCALAR and tag == _MERGE:
            message = "merge keys (<<) are not supported; alias the whole value instead"
        elif kind == _SCALAR and value:
            message = f"keys must be strings; quote it: '{value}'"
        else:
            message = "keys must be strings"
        self.report(message, node, loc, "key_type")
        return None

    def scalar(self, node: _Node, loc: Loc) -> Any:
        text, tag = str(node[2]), node[1]
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
    root, aliases = _compose(text, path)
    if root is None:
        _fail("empty document", path, "empty")
    if root[0] != _MAPPING:
        _fail("a workflow definition must be a mapping", path, "not_mapping", (1, 1))
    if aliases:  # without aliases the composer's own counts were the whole story
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
