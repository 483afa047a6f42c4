"""YAML text -> composed nodes, by libyaml or PyYAML alike, with the caps checked on the way.

The events come from libyaml when PyYAML was built with it (its pure-Python parser takes several
times longer). What libyaml reads otherwise than PyYAML (tabs, odd tags, some empty values; see
``_compose_events``), and every document libyaml refuses, is read again by PyYAML's parser, so
the nodes, the positions and the error messages are the same with or without libyaml. Nodes are
composed without recursion and without constructing objects; ``measure`` checks what aliases
would expand to. Plain scalars are resolved by the YAML 1.2 core schema (see ``yaml_source``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, AnyStr, NoReturn, Protocol

import yaml
import yaml.composer
import yaml.parser
import yaml.reader
import yaml.scanner

from statemachine import errors
from statemachine.definition import issues

Loc = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 200_000

Y = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (Y + t for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP, MERGE = Y + "seq", Y + "map", Y + "merge"
SCALAR_TAGS = {STR, INT, FLOAT, BOOL, NULL, MERGE}

NULL_RE = re.compile(r"(?:~|null|Null|NULL|)\Z")
BOOL_RE = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
INT_RE = re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
FLOAT_RE = re.compile(
    r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)


def text_pos(text: AnyStr, index: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    return text.count(newline, 0, index) + 1, index - text.rfind(newline, 0, index)


def pos(at: Any) -> tuple[int, int]:
    """1-based (line, column) of a yaml Mark; a ready tuple passes through; None is unknown."""
    if at is None or isinstance(at, tuple):
        return at or (1, 1)  # a whole-document problem (e.g. its size) points at its start
    return (at.line + 1, at.column + 1)


def issue(message: str, path: str | None, code: str, at: Any, loc: Loc = ()) -> errors.Issue:
    return errors.Issue(message, issues.format_loc(loc), path, *pos(at), code)


def fail(message: str, path: str | None, code: str, at: Any = None) -> NoReturn:
    raise errors.DefinitionError([issue(message, path, code, at)])


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
    (NULL, NULL_RE, ["~", "n", "N", ""]),
    (BOOL, BOOL_RE, list("tTfF")),
    (INT, INT_RE, list("-+0123456789")),
    (FLOAT, FLOAT_RE, list("-+0123456789.")),
    (MERGE, re.compile(r"<<\Z"), ["<"]),
):
    for _char in _first:
        _IMPLICIT.setdefault(_char, []).append((_tag, _regexp))

# A composed node is a plain tuple (kind, tag, value, (line, column)), cheaper than yaml.Node
# and its two marks: a scalar's value is its text, a sequence's the list of its item nodes, a
# mapping's the flat list key, value, key, value... An alias is a copy of its anchor's tuple
# with the alias's own position, sharing the anchor's list.
SCALAR, SEQUENCE, MAPPING = 0, 1, 2
_SCALAR_EVENT, _ALIAS = yaml.ScalarEvent, yaml.AliasEvent
_SEQUENCE_START, _SEQUENCE_END = yaml.SequenceStartEvent, yaml.SequenceEndEvent
_MAPPING_START, _MAPPING_END = yaml.MappingStartEvent, yaml.MappingEndEvent
Node = tuple[int, str, Any, tuple[int, int]]


def _resolve(value: str) -> str:
    """The tag of an untagged plain scalar."""
    for tag, regexp in _IMPLICIT.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return STR


class _Unsure(yaml.YAMLError):
    """libyaml reached a spot PyYAML may read differently: let PyYAML read the document."""


def _compose_events(
    parser: _Events, path: str | None, careful: str | None = None
) -> tuple[Node | None, int]:
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
    anchors: dict[str, tuple[Node, Any]] = {}  # anchor -> its node and where it was set
    open_: list[list[Node]] = []  # the children of the collections being composed
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
                fail(f"more than {MAX_ALIASES} aliases", path, "too_large", mark)
            if event.anchor not in anchors:
                problem = f"found undefined alias {event.anchor!r}"
                raise yaml.composer.ComposerError(None, None, problem, mark)
            target = anchors[event.anchor][0]
            node: Node = (target[0], target[1], target[2], at)
        else:
            nodes += 1
            if nodes > MAX_NODES:
                fail(f"more than {MAX_NODES} values", path, "too_large", mark)
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
                    tag = _resolve(value) if event.implicit[0] else STR
                elif tag == "!":  # PyYAML resolves it as plain, quoted or empty alike
                    tag = _resolve(value)
                node = (SCALAR, tag, value, at)
            else:
                if len(open_) >= MAX_DEPTH:
                    fail(f"nesting is deeper than {MAX_DEPTH} levels", path, "too_deep", mark)
                if careful is not None and tag is not None:
                    raise _Unsure
                if tag is None or tag == "!":
                    tag = SEQ if kind is _SEQUENCE_START else MAP
                node = (SEQUENCE if kind is _SEQUENCE_START else MAPPING, tag, [], at)
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
        fail(message, path, "multiple_documents", parser.peek_event().start_mark)
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


def compose(text: str, path: str | None) -> tuple[Node | None, int]:
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
            line, column = pos(exc.context_mark)
            where = f" (line {line}, column {column})" if (line, column) != pos(mark) else ""
            message = f"{exc.context}{where}: {exc.problem}"
        fail(f"invalid YAML: {message}", path, "syntax", mark)
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else 0xFFFD  # a code point
        at = text_pos(text, exc.position if isinstance(exc.position, int) else 0)
        fail(f"character U+{char:04X} is not allowed in YAML", path, "syntax", at)
    except yaml.YAMLError as exc:
        fail(f"invalid YAML: {exc}", path, "syntax")
    finally:
        if py is not None:
            py.dispose()


def measure(root: Node, path: str | None) -> None:
    """Check the size and depth the data *would* have, without expanding aliases (billion laughs).

    Iterative, because chained aliases can nest far deeper than the composer saw. Collections
    are keyed by their children list, which an alias shares with its anchor.
    """
    done: dict[int, tuple[int, int]] = {}  # id(children) -> (values, depth)
    open_: set[int] = set()  # on the current path: meeting one again means a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        kids: list[Node] = node[2]
        key = id(kids)
        if leaving:
            count, depth = 1, 1
            for kid in kids:
                measured = done[id(kid[2])] if kid[0] != SCALAR else (1, 0)
                count, depth = count + measured[0], max(depth, measured[1] + 1)
            if count > MAX_NODES:
                message = f"aliases expand to more than {MAX_NODES} values"
                fail(message, path, "too_large", node[3])
            if depth > MAX_DEPTH:
                message = f"nesting is deeper than {MAX_DEPTH} levels once aliases are expanded"
                fail(message, path, "too_deep", node[3])
            open_.discard(key)
            done[key] = (count, depth)
        elif key in open_:
            message = "an alias refers to a value that contains it"
            fail(message, path, "recursive_alias", node[3])
        elif key not in done:
            open_.add(key)
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if kid[0] != SCALAR)
