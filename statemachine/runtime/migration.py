"""Migration of running instances, the pure part: the plan's types, step renames, and the move
of a stored state onto another version's step paths.

Like Camunda's and Flowable's process instance migration, a migration maps step paths of the
old version onto the new one (``mapping``, old path -> new path; a path not mapped keeps its
name), keeps every completed result (renamed with its step) and refuses an instance whose
steps in flight would have nowhere to go (``migration_checks``). Nothing here reads or writes
the database: ``engine.migration`` loads the instances and commits the moves.

A mapping renames a step; it does not move one into another scope: the old and new paths have
as many parts (a branch's or a map item's records are kept per scope).

It sits in ``runtime``, not ``definition``, because its checks read a stored ``State``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statemachine import errors, records
from statemachine.definition import models
from statemachine.runtime.paths import SUFFIX, base_path, is_compensation

__all__ = [
    "MigrationCheck",
    "MigrationPlan",
    "check_mapping",
    "move_frontier",
    "move_rows",
    "rename",
]


@dataclass(frozen=True)
class MigrationCheck:
    """One instance's verdict: ``ok`` (it can move) or blocked, with every reason."""

    instance_id: str
    ok: bool
    reasons: tuple[str, ...] = ()
    status: str = ""  # the instance's status when it was checked
    from_version: str = ""
    from_hash: str = ""


@dataclass
class MigrationPlan:
    """What ``Engine.plan_migration`` found, for ``Engine.migrate`` to apply: the target
    version, the step mapping and a report per instance. ``migrate`` checks every instance
    again against its state at that moment and rewrites ``report`` with what happened."""

    workflow: str
    to: models.WorkflowDefinition
    mapping: dict[str, str] = field(default_factory=dict)
    report: list[MigrationCheck] = field(default_factory=list)

    @property
    def ok(self) -> list[str]:
        """The ids of the instances that can move (or moved, after ``migrate``)."""
        return [c.instance_id for c in self.report if c.ok]

    @property
    def blocked(self) -> list[MigrationCheck]:
        return [c for c in self.report if not c.ok]


def _depth(path: str) -> int:
    return len(path.split("/"))


def check_mapping(
    mapping: Mapping[str, str],
    olds: list[models.WorkflowDefinition],
    new: models.WorkflowDefinition,
) -> dict[str, str]:
    """The mapping as a plain dict, or InputValidationError naming the first bad entry: every
    key a step path of one of the ``olds``, every value a step path of ``new``, at the same
    depth (a step is renamed, not moved to another scope)."""
    old_paths: set[str] = set()
    for old in olds:
        old_paths.update(path for path, _ in old.walk())
    new_paths = [path for path, _ in new.walk()]
    out: dict[str, str] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.InputValidationError("a migration mapping maps step paths to step paths")
        if key not in old_paths:
            known = ", ".join(sorted(old_paths)) or "none"
            raise errors.InputValidationError(
                f"mapping {key}={value}: {key!r} is not a step of {new.name!r} (its steps: {known})"
            )
        if value not in new_paths:
            raise errors.InputValidationError(
                f"mapping {key}={value}: {value!r} is not a step of version {new.version} of "
                f"{new.name!r} (its steps: {', '.join(new_paths)})"
            )
        out[key] = value
    for key, value in out.items():
        scope, _, _ = key.rpartition("/")
        if _depth(key) != _depth(value) or rename(scope, out) != value.rpartition("/")[0]:
            raise errors.InputValidationError(
                f"mapping {key}={value}: a step can be renamed, not moved into another scope"
            )
    return out


def rename(path: str, mapping: Mapping[str, str]) -> str:
    """``path`` (a concrete one: map items as ``it@3``, compensations, item results) under the
    new version's names: its longest mapped prefix replaced, item indexes kept."""
    if not mapping:
        return path
    suffix = ""
    if is_compensation(path):
        path, suffix = base_path(path), SUFFIX
    parts = path.split("/")
    template = [part.split("@")[0] for part in parts]
    for k in range(len(parts), 0, -1):
        new = mapping.get("/".join(template[:k]))
        if new is None:
            continue
        head = new.split("/")
        for j, part in enumerate(parts[:k]):
            if "@" in part and j < len(head):
                head[j] += part[part.index("@") :]
        return "/".join(head + parts[k:]) + suffix
    return path + suffix


def move_frontier(frontier: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The instance's ``state`` column with every step path renamed (records of branches are
    keyed by branch name, which a mapping does not change)."""
    out = dict(frontier)
    if not mapping:
        return out

    def rn(path: Any) -> Any:
        return rename(path, mapping) if isinstance(path, str) else path

    for key in ("active", "compensations", "order", "redo"):
        if key in out:
            out[key] = [rn(p) for p in out[key]]
    if "deferred" in out:
        out["deferred"] = [[item[0], *(rn(p) for p in item[1:])] for item in out["deferred"]]
    for key in ("loops", "loop_started", "latest", "branches"):
        if key in out:
            out[key] = {rn(p): v for p, v in out[key].items()}
    if "extra" in out:
        out["extra"] = {
            rn(p): ({**x, "prev": rn(x["prev"])} if "prev" in x else x)
            for p, x in out["extra"].items()
        }
    return out


def move_rows(
    rows: list[records.StepResult], mapping: Mapping[str, str]
) -> tuple[list[records.StepResult], list[records.StepResult], list[str]]:
    """(every row under its new path, the rows that moved, the old paths they leave)."""
    moved: list[records.StepResult] = []
    left: list[str] = []
    out: list[records.StepResult] = []
    for row in rows:
        path = rename(row.step_name, mapping)
        if path == row.step_name:
            out.append(row)
            continue
        left.append(row.step_name)
        row = row.model_copy(update={"step_name": path})
        moved.append(row)
        out.append(row)
    kept = {r.step_name for r in out}
    return out, moved, [p for p in left if p not in kept]
