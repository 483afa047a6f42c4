"""Shapes of data for the build-time flow check: JSON Schemas read as "what fields, what types".

Both schema forms (a pydantic model, a JSON Schema dict) become one ``Shape``: a JSON Schema
node plus the document its ``$ref`` resolve against. ``gaps`` answers "can every value of this
shape be given where that shape is expected?" conservatively: it reports only what it can
prove wrong (a required field not declared, a type that cannot fit) and stays silent on what it
cannot decide (``allOf``, ``not``, ``if``, patterns, formats, numeric bounds, an unknown side).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

JsonSchema = Mapping[str, Any]

# after `resolve`, a `$ref` left is one it cannot follow (another document, or too deep)
_UNDECIDED = ("allOf", "not", "if", "patternProperties", "$ref", "$dynamicRef", "dependentSchemas")
_SIMPLE = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


@dataclass(frozen=True)
class Shape:
    """One JSON Schema node within its document. ``dumped``: every declared property is
    present (a pydantic model's output is dumped whole, defaults included)."""

    node: JsonSchema
    root: JsonSchema
    dumped: bool = False

    def at(self, node: Any) -> Shape:
        return resolve(Shape(node if isinstance(node, Mapping) else {}, self.root, self.dumped))


def of_schema(schema: Any, *, output: bool) -> Shape | None:
    """The shape of a step's or workflow's schema (a model or a dict); None when there is none."""
    if schema is None:
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        doc = schema.model_json_schema(mode="serialization" if output else "validation")
        return resolve(Shape(doc, doc, dumped=output))
    if isinstance(schema, Mapping):
        return resolve(Shape(schema, schema))
    return None


def resolve(shape: Shape) -> Shape:
    """Follow local ``$ref`` (``#/$defs/X``) and a lone ``allOf: [x]`` (pydantic writes one)."""
    node, seen = shape.node, 0
    while seen < 32:
        seen += 1
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = shape.root
            for part in ref[2:].split("/"):
                target = (
                    target.get(part.replace("~1", "/").replace("~0", "~"), {})
                    if isinstance(target, Mapping)
                    else {}
                )
            if not isinstance(target, Mapping):
                return Shape({}, shape.root, shape.dumped)
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
            node = {**all_of[0], **{k: v for k, v in node.items() if k != "allOf"}}
            continue
        break
    return Shape(node, shape.root, shape.dumped)


def literal(value: Any) -> Shape:
    """The shape of a constant written in a definition (a mapping's fixed part)."""
    if isinstance(value, Mapping):
        props = {str(k): literal(v).node for k, v in value.items()}
        node: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)}
        return Shape(node, {}, dumped=True)
    if isinstance(value, list | tuple):
        return Shape({"type": "array"}, {})
    kind = _SIMPLE.get(type(value))
    return Shape({"type": kind, "const": value} if kind else {}, {})


# --- reading one shape ----------------------------------------------------------------------


def types(shape: Shape) -> set[str] | None:
    """The JSON types a value of ``shape`` may have; None when the schema does not say."""
    node = shape.node
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
        return set(declared)
    values = _values(node)
    if values is not None:
        return {_SIMPLE.get(type(v), "object" if isinstance(v, dict) else "array") for v in values}
    alternatives = _alternatives(shape)
    if alternatives:
        found: set[str] = set()
        for alt in alternatives:
            got = types(alt)
            if got is None:
                return None
            found |= got
        return found
    if "properties" in node and not any(k in node for k in _UNDECIDED):
        return {"object"}
    return None


def _values(node: JsonSchema) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    enum = node.get("enum")
    return list(enum) if isinstance(enum, list) else None


def _alternatives(shape: Shape) -> list[Shape]:
    for key in ("anyOf", "oneOf"):
        alts = shape.node.get(key)
        if isinstance(alts, list) and alts:
            return [shape.at(a) for a in alts]
    return []


def describe(shape: Shape) -> str:
    """A short type name for messages: ``integer``, ``string | null``, ``one of 'a', 'b'``."""
    values = _values(shape.node)
    if values is not None and len(values) == 1:
        return repr(values[0])
    if values is not None and len(values) <= 5:
        return "one of " + ", ".join(repr(v) for v in values)
    found = types(shape)
    if not found:
        return "any value"
    if found == {"array"}:
        items = items_of(shape)
        inner = describe(items) if items is not None else ""
        return f"array of {inner}" if inner and inner != "any value" else "array"
    return " | ".join(sorted(found))


def fields(shape: Shape) -> dict[str, Shape] | None:
    """The declared properties of an object shape; None when it does not list them (or also
    allows others: a field reference there proves nothing)."""
    node = shape.node
    props = node.get("properties")
    if not isinstance(props, Mapping) or any(k in node for k in _UNDECIDED):
        return None
    extra = node.get("additionalProperties")
    if extra is True or isinstance(extra, Mapping):  # declared open: any other key may come
        return None
    if _alternatives(shape):
        return None
    return {str(k): shape.at(v) for k, v in props.items()}


def required(shape: Shape) -> set[str]:
    """The fields every value of ``shape`` has."""
    props = shape.node.get("properties")
    if shape.dumped and isinstance(props, Mapping):
        return {str(k) for k in props}
    names = shape.node.get("required")
    return {str(n) for n in names} if isinstance(names, list) else set()


def items_of(shape: Shape) -> Shape | None:
    items = shape.node.get("items")
    return shape.at(items) if isinstance(items, Mapping) else None


def member(shape: Shape, key: str | int) -> tuple[Shape | None, bool]:
    """The shape of ``value.key`` / ``value[key]``, and whether the key is proven absent."""
    if isinstance(key, int):
        if types(shape) == {"array"}:
            return items_of(shape), False
        return None, False
    found = fields(shape)
    if found is None or types(shape) != {"object"}:
        return None, False
    if key in found:
        return found[key], False
    return None, True


# --- does one shape fit another -------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """One proven misfit: ``path`` is the field (``amount``, ``items[].sku``; "" for the value)."""

    path: str
    kind: str  # "missing" (not declared), "optional" (may be absent), "type", "extra" (refused)
    need: Shape
    have: Shape | None
    have_fields: tuple[str, ...] = ()


def gaps(have: Shape, need: Shape, path: str = "", depth: int = 0) -> Iterator[Gap]:
    """Every proven way a value of ``have`` may fail to satisfy ``need``."""
    if (
        depth > 20
        or any(k in need.node for k in _UNDECIDED)
        or any(k in have.node for k in _UNDECIDED)
    ):
        return
    have_alts = _alternatives(have)
    if have_alts:  # a value of any alternative may come: each must fit
        seen: set[tuple[str, str]] = set()
        for alt in have_alts:
            for gap in gaps(alt, need, path, depth + 1):
                if gap.path == path and gap.kind == "type":
                    gap = Gap(path, "type", need, have)  # say the whole union, once
                if (gap.path, gap.kind) not in seen:
                    seen.add((gap.path, gap.kind))
                    yield gap
        return
    need_alts = _alternatives(need)
    if need_alts:  # fits one alternative: enough; no alternative fits: say so once
        if all(list(gaps(have, alt, path, depth + 1)) for alt in need_alts):
            yield Gap(path, "type", need, have)
        return
    if not _type_fits(have, need):
        yield Gap(path, "type", need, have)
        return
    have_types, need_types = types(have), types(need)
    if have_types == {"object"} and need_types is not None and "object" in need_types:
        yield from _object_gaps(have, need, path, depth)
    elif have_types == {"array"} and need_types is not None and "array" in need_types:
        have_items, need_items = items_of(have), items_of(need)
        if have_items is not None and need_items is not None:
            yield from gaps(have_items, need_items, f"{path}[]", depth + 1)


def _type_fits(have: Shape, need: Shape) -> bool:
    need_types, have_types = types(need), types(have)
    if need_types is None or have_types is None:
        return True
    if "number" in need_types:
        need_types = need_types | {"integer"}
    if not have_types <= need_types:
        return False
    need_values, have_values = _values(need.node), _values(have.node)
    if need_values is not None and have_values is not None:
        return all(v in need_values for v in have_values)
    return True


def _object_gaps(have: Shape, need: Shape, path: str, depth: int) -> Iterator[Gap]:
    have_fields, need_fields = fields(have), need.node.get("properties")
    if have_fields is None:
        return
    listed = tuple(sorted(have_fields))
    present = required(have)
    for name in sorted(required(need)):
        want = (
            need.at(need_fields.get(name, {})) if isinstance(need_fields, Mapping) else need.at({})
        )
        where = f"{path}.{name}" if path else name
        if name not in have_fields:
            yield Gap(where, "missing", want, None, listed)
        elif name not in present:
            yield Gap(where, "optional", want, have_fields[name], listed)
    if not isinstance(need_fields, Mapping):
        return
    for name, sub in sorted(need_fields.items()):
        if name in have_fields:
            where = f"{path}.{name}" if path else name
            yield from gaps(have_fields[name], need.at(sub), where, depth + 1)
    if need.node.get("additionalProperties") is False:
        for name in sorted(present - set(need_fields)):
            where = f"{path}.{name}" if path else name
            yield Gap(where, "extra", need, have_fields.get(name), listed)


def inline(shape: Shape, depth: int = 0) -> dict[str, Any]:
    """The node with every ``$ref`` replaced by what it names, so it can be placed inside
    another document (a parallel's output holds its branches' shapes). A recursive model is
    cut at a depth: the rest is "any value". A dumped shape lists every property as required."""
    if depth > 8:
        return {}
    shape = resolve(shape)
    node = {k: v for k, v in shape.node.items() if k not in ("$defs", "definitions")}
    props = node.get("properties")
    if isinstance(props, Mapping):
        node["properties"] = {str(k): inline(shape.at(v), depth + 1) for k, v in props.items()}
        if shape.dumped:
            node["required"] = list(node["properties"])
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            node[key] = inline(shape.at(node[key]), depth + 1)
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            node[key] = [inline(shape.at(a), depth + 1) for a in node[key]]
    return node
