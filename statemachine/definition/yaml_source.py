"""Safe YAML reading with positions: the layer the definition loader builds on.

Not ``yaml.safe_load``: it forgets positions, applies YAML 1.1 surprises (``on``/``yes``
booleans, dates, ``1:30`` == 90), keeps the last of duplicate keys and expands aliases without
limit. ``yaml_compose`` composes the parser's events into nodes, checking the caps as they
arrive; this module builds the plain data from them, recording where every value and key was
written.

Scalars follow the YAML 1.2 core schema: only ``true``/``True``/``TRUE`` (and the ``false`` forms)
are booleans; ``null``/``~``/empty are None; ints are decimal, ``0o`` or ``0x``; floats include
``.inf``/``.nan``; all else (``on``, ``2024-01-01``, ``1_000``) is a string. Tags other than
str/int/float/bool/null/seq/map are refused, and so are merge keys (``<<``), which hide where a
value came from: alias the whole value instead. Every failure is an ``errors.DefinitionError``.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statemachine import errors
from statemachine.definition import yaml_compose

Loc = yaml_compose.Loc

MAX_BYTES = 1_000_000


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
        yaml_compose.fail(
            f"the definition is {size} bytes; the limit is {MAX_BYTES}", path, "too_large"
        )
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
        yaml_compose.fail(f"cannot read file: {reason}", name, "io")
    size = max(size, len(raw))
    if size > MAX_BYTES:
        yaml_compose.fail(
            f"the definition is {size} bytes; the limit is {MAX_BYTES}", name, "too_large"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        yaml_compose.fail(message, name, "encoding", yaml_compose.text_pos(raw, exc.start))
    return _parse(text, name)


def _show(tag: str) -> str:
    return "!!" + tag[len(yaml_compose.Y) :] if tag.startswith(yaml_compose.Y) else tag


def _to_number(text: str, tag: str) -> int | float:
    """Raises ValueError past Python's int digit limit."""
    if tag == yaml_compose.FLOAT:
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

    def report(self, message: str, node: yaml_compose.Node, loc: Loc, code: str) -> None:
        self.issues.append(yaml_compose.issue(message, self.path, code, node[3], loc))

    def build(self, node: yaml_compose.Node, loc: Loc) -> Any:
        kind, tag, value, self.positions[loc] = node
        if kind == yaml_compose.SCALAR and tag == yaml_compose.STR:  # the usual case first
            return value
        if kind == yaml_compose.MAPPING and tag == yaml_compose.MAP:
            return self.mapping(value, loc)
        if kind == yaml_compose.SEQUENCE and tag == yaml_compose.SEQ:
            return [self.build(kid, (*loc, i)) for i, kid in enumerate(value)]
        if kind == yaml_compose.SCALAR and tag in yaml_compose.SCALAR_TAGS:
            return self.scalar(node, loc)
        message = f"tag {_show(tag)} is not allowed"
        if tag in yaml_compose.SCALAR_TAGS or tag in (yaml_compose.SEQ, yaml_compose.MAP):
            message += " on a " + ("scalar" if kind == yaml_compose.SCALAR else "collection")
        self.report(message, node, loc, "tag")
        return None

    def mapping(self, children: list[yaml_compose.Node], loc: Loc) -> dict[str, Any]:
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

    def key(self, node: yaml_compose.Node, loc: Loc) -> str | None:
        kind, tag, value, _ = node
        if kind == yaml_compose.SCALAR and tag == yaml_compose.STR:
            return str(value)
        if kind == yaml_compose.SCALAR and tag == yaml_compose.MERGE:
            message = "merge keys (<<) are not supported; alias the whole value instead"
        elif kind == yaml_compose.SCALAR and value:
            message = f"keys must be strings; quote it: '{value}'"
        else:
            message = "keys must be strings"
        self.report(message, node, loc, "key_type")
        return None

    def scalar(self, node: yaml_compose.Node, loc: Loc) -> Any:
        text, tag = str(node[2]), node[1]
        if tag in (yaml_compose.STR, yaml_compose.MERGE):  # "<<" outside a key is just text
            return text
        if tag == yaml_compose.NULL and yaml_compose.NULL_RE.match(text):
            return None
        if tag == yaml_compose.BOOL and yaml_compose.BOOL_RE.match(text):
            return text.lower() == "true"
        if (tag == yaml_compose.INT and yaml_compose.INT_RE.match(text)) or (
            tag == yaml_compose.FLOAT and yaml_compose.FLOAT_RE.match(text)
        ):
            try:
                return _to_number(text, tag)
            except ValueError:
                self.report(f"the number {text[:20]}... has too many digits", node, loc, "number")
                return None
        self.report(f"{text[:40]!r} is not a valid {_show(tag)}", node, loc, "tag")
        return None


def _parse(text: str, path: str | None) -> SourceDocument:
    root, aliases = yaml_compose.compose(text, path)
    if root is None:
        yaml_compose.fail("empty document", path, "empty")
    if root[0] != yaml_compose.MAPPING:
        yaml_compose.fail("a workflow definition must be a mapping", path, "not_mapping", (1, 1))
    if aliases:  # without aliases the composer's own counts were the whole story
        yaml_compose.measure(root, path)
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
