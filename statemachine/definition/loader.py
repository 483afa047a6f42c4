"""Load workflow definitions from YAML: a path, a text, a folder, or a stored ``to_dict()``.

Every problem of a document (its YAML, its fields, its graph) is raised together, as one
``DefinitionError`` whose issues carry the author's line and column; ``yaml_reader`` reads the
document and ``validation`` checks the graph.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from statemachine import errors
from statemachine.definition import models, validation, yaml_reader, yaml_source


def _load(doc: yaml_source.SourceDocument, *, flow: bool = True) -> models.WorkflowDefinition:
    reader = yaml_reader.Reader(doc)
    definition = reader.definition()
    found = list(reader.found)
    if definition is not None:  # with field issues too: every problem in one pass
        found.extend(validation.validate(definition, flow=flow))
    if found or definition is None:
        # a required field whose inline callable was refused is also "missing": report it once
        refused = {_field_of(i.location) for i in found if i.code == "not_loadable"}
        found = [i for i in found if i.code != "missing" or _field_of(i.location) not in refused]
        placed = [reader.positions.place(i) for i in found]
        placed.sort(key=lambda i: (i.line or 0, i.column or 0))
        raise errors.DefinitionError(placed)
    return definition


def _field_of(location: str) -> tuple[str, str]:
    """``steps[0].handler`` -> ("steps[0]", "action"): action, handler and check name one field."""
    head, _, key = location.rpartition(".")
    return head, "action" if key in {"action", "handler", "check"} else key


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading allocates hundreds of thousands of objects that live until it ends; meanwhile
    the cyclic collector would walk the whole heap (a full pass costs ~30 ms in a big process:
    a 1,000-step load took 40 or 70 ms by luck). It makes no cycles that must die early."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:  # a caller that turned the collector off keeps it off
            gc.enable()


def load_yaml_text(text: str, *, path: str | None = None) -> models.WorkflowDefinition:
    with _collector_paused():
        return _load(yaml_source.parse_text(text, path=path))


def load_yaml_file(path: str | os.PathLike[str]) -> models.WorkflowDefinition:
    with _collector_paused():
        return _load(yaml_source.parse_file(path))


def load_yaml(source: str | os.PathLike[str]) -> models.WorkflowDefinition:
    """A path (``Path``, or a one-line string ending in .yaml/.yml or naming a file) or YAML text."""
    if isinstance(source, os.PathLike):
        return load_yaml_file(source)
    if not isinstance(source, str):
        raise errors.DefinitionError(
            f"load_yaml takes a path or YAML text, not {type(source).__name__}"
        )
    one_line = "\n" not in source and len(source) < 4096
    if one_line and (source.endswith((".yaml", ".yml")) or _is_file(source)):
        return load_yaml_file(source)
    return load_yaml_text(source)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def load_definitions(folder: str | os.PathLike[str]) -> list[models.WorkflowDefinition]:
    """Every ``*.yaml``/``*.yml`` under ``folder``; problems of all files are reported together."""
    root = Path(folder)
    if not root.is_dir():
        raise errors.DefinitionError([errors.Issue(f"{root} is not a folder", path=str(root))])
    found: list[errors.Issue] = []
    out: list[models.WorkflowDefinition] = []
    seen: dict[tuple[str, str], str] = {}
    files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
    for file in files:
        try:
            definition = load_yaml_file(file)
        except errors.DefinitionError as exc:
            found.extend(exc.errors)
            continue
        key = (definition.name, definition.version)
        if key in seen:
            found.append(
                errors.Issue(
                    f"workflow {definition.name!r} version {definition.version} is also defined in {seen[key]}",
                    location="id",
                    path=str(file),
                    line=1,
                    column=1,
                    code="duplicate_workflow",
                )
            )
            continue
        seen[key] = str(file)
        out.append(definition)
    if found:
        raise errors.DefinitionError(found)
    return out


def load_dict(data: dict[str, Any], *, path: str | None = None) -> models.WorkflowDefinition:
    """A definition from its ``to_dict()`` form (e.g. the canonical copy stored with instances).

    The typed data flow is not checked again: a stored copy was checked when it was registered,
    and its running instances must resume even where a later check finds more to report."""
    doc = yaml_source.SourceDocument(data=data, path=path, positions={}, key_positions={})
    return _load(doc, flow=False)
