"""What an engine knows by name: workflow definitions (every version, by hash) and actions.

Versions are kept by content hash, so an instance always finds the graph it started with: the
one registered in this process, or the canonical copy stored with it.
"""

from __future__ import annotations

import builtins
import inspect
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from statemachine import errors
from statemachine.definition import issues, loader, models, render
from statemachine.runtime import clock as clocks
from statemachine.runtime import jsondata
from statemachine.store import repository as repo
from statemachine.store import tables

BUILTIN_ACTIONS: dict[str, Callable[..., Any]] = {"noop": lambda value: value}
LIMITS_TTL = 1.0  # seconds one read of the stored max_concurrent limits serves
ITEM_INDEX_ROOM = 8  # characters a path keeps free per map around it: "@" and the item's index
COMPENSATION_ROOM = len("#compensate")


def storable_issues(definition: models.WorkflowDefinition) -> list[errors.Issue]:
    """Names and step paths longer than the store's columns: refused here, on every database
    (Postgres would refuse the write, SQLite would keep it)."""
    found = []
    if len(definition.name) > tables.NAME_LENGTH:
        found.append(f"the workflow's name is longer than {tables.NAME_LENGTH} characters")
    if len(definition.version) > tables.VERSION_LENGTH:
        found.append(f"the workflow's version is longer than {tables.VERSION_LENGTH} characters")
    for what, text in (("name", definition.name), ("version", definition.version)):
        problem = jsondata.text_problem(text)
        if problem is not None:  # Postgres would refuse it; SQLite would keep it
            found.append(f"the workflow's {what} {text!r} cannot be stored: {problem}")
    iterators = [
        f"{path}/{step.iterator.name}/"
        for path, step in definition.walk()
        if isinstance(step, models.MapStep)
    ]
    for path, _ in definition.walk():
        maps = sum(1 for prefix in iterators if path.startswith(prefix))
        if len(path) + maps * ITEM_INDEX_ROOM + COMPENSATION_ROOM > tables.PATH_LENGTH:
            found.append(
                f"step path {path[:60]!r}... is too long to store: keep a path (every enclosing "
                f"step's name and its own) under {tables.PATH_LENGTH - COMPENSATION_ROOM} "
                f"characters, less {ITEM_INDEX_ROOM} per enclosing map"
            )
    return [
        errors.Issue(message, path=definition.source_path, code="too_long") for message in found
    ]


def _without_modules(value: Any) -> Any:
    """A definition dict with inline callables named by qualified name only."""
    if isinstance(value, dict):
        if value.get("loadable") is False and isinstance(value.get("callable"), str):
            return {"callable": value["callable"].rsplit(".<locals>.", 1)[-1].rsplit(".", 1)[-1]}
        return {k: _without_modules(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_modules(v) for v in value]
    return value


def _children(definition: models.WorkflowDefinition) -> builtins.list[tuple[str, str]]:
    """(step path, child workflow name) of every subworkflow step."""
    return [
        (path, step.workflow)
        for path, step in definition.walk()
        if isinstance(step, models.SubworkflowStep)
    ]


def _cycle_through(
    origin: str,
    first: str,
    lookup: Callable[[str], models.WorkflowDefinition | None],
) -> builtins.list[str] | None:
    """The chain ``origin -> first -> ... -> origin`` when starting ``first`` leads back."""
    stack: builtins.list[tuple[str, builtins.list[str]]] = [(first, [origin, first])]
    seen: set[str] = set()
    while stack:
        name, chain = stack.pop()
        if name == origin:
            return chain
        if name in seen:
            continue
        seen.add(name)
        definition = lookup(name)
        if definition is not None:
            stack.extend((child, [*chain, child]) for _, child in _children(definition))
    return None


class Registry:
    def __init__(self, store: repo.Repository, clock: clocks.Clock) -> None:
        self.repo = store
        self.clock = clock
        self.by_hash: dict[str, models.WorkflowDefinition] = {}
        self.latest: dict[str, str] = {}  # name -> hash of the version registered last
        self.order: dict[str, builtins.list[str]] = {}  # name -> hashes, in registration order
        self._retired: set[str] = set()  # hashes unregistered (by any engine), as stored
        self._limits: dict[str, int] = {}  # max_concurrent by workflow, as stored
        self._limits_read = float("-inf")  # time.monotonic() of that read
        self._limits_lock = threading.Lock()
        self.actions: dict[str, Callable[..., Any]] = dict(BUILTIN_ACTIONS)
        self._checked: set[str] = set()  # hashes of definitions whose actions are all registered

    def action(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(fn):
                raise errors.InputValidationError(f"action {name!r} must be callable")
            self.actions[name] = fn
            return fn

        return decorate

    def register_actions(self, obj: Any) -> None:
        """Every public callable attribute of ``obj`` (an object, class or module) becomes an action."""
        for name in dir(obj):
            if name.startswith("_"):
                continue
            value = getattr(obj, name)
            if callable(value) and not inspect.isclass(value):
                if inspect.ismodule(obj) and getattr(value, "__module__", None) != obj.__name__:
                    continue
                self.actions[name] = value

    def register(
        self,
        definition: models.WorkflowDefinition | Iterable[models.WorkflowDefinition],
        max_concurrent: int | None = None,
        *,
        check_actions: bool = True,
        revive: bool = True,
    ) -> None:
        """Register definitions; ``check_actions=False`` suits processes that only start or inspect.

        A version unregistered before may be started again once registered again (``revive``),
        except by the CLI, which registers its folder on every command and must not undo an
        ``unregister``.

        ``max_concurrent`` is stored in the database for the workflow's name, every version:
        every engine on that database obeys it, whether it registers with it or not. A later
        ``register`` with another number replaces it (the last one wins); without one, the
        stored limit stays.
        """
        if max_concurrent is not None and (
            not isinstance(max_concurrent, int)
            or isinstance(max_concurrent, bool)
            or max_concurrent < 1
        ):
            raise errors.InputValidationError("max_concurrent must be a whole number >= 1")
        items = (
            [definition] if isinstance(definition, models.WorkflowDefinition) else list(definition)
        )
        for item in items:
            if not isinstance(item, models.WorkflowDefinition):
                raise errors.DefinitionError(
                    f"register takes WorkflowDefinition objects, not {type(item).__name__}"
                )
            too_long = storable_issues(item)
            if too_long:
                raise errors.DefinitionError(too_long)
            if check_actions:
                self.check_actions(item)
        if check_actions:
            self.check_children(items)
        now = self.clock.now()
        for item in items:
            self.repo.save_definition(item.hash, item.name, item.version, item.to_dict(), now)
            if revive:
                self.repo.revive(item.hash)
            self.by_hash[item.hash] = item
            order = self.order.setdefault(item.name, [])
            if item.hash in order:
                order.remove(item.hash)
            order.append(item.hash)
            if max_concurrent is not None:
                self.repo.set_max_concurrent(item.name, max_concurrent, now)
            if revive or item.hash not in self.repo.retired():  # the CLI never restarts one
                specs = [
                    (render.schedule_to_dict(s), s.timezone, s.next_after(now))
                    for s in item.schedules
                ]
                self.repo.sync_schedules(item.name, item.hash, specs, now)
            limit = item.concurrency.limit if item.concurrency is not None else None
            self.repo.set_key_limit(item.name, limit, now)
        self.refresh_limits()

    def unregister(self, name: str, version: str | None = None) -> None:
        """No new instances of ``name`` (every version, or ``version``), for every engine on the
        database (others notice within ``LIMITS_TTL``); running instances finish on theirs."""
        stored = self.repo.stored_versions(name)
        local = [self.by_hash[h].version for h in self.order.get(name, [])]
        if not stored and not local:
            known = set(self.order) | set(self.latest)
            raise errors.WorkflowNotFound(
                name, f"no workflow named {name!r} is registered{issues.did_you_mean(name, known)}"
            )
        if version is not None and version not in stored and version not in local:
            versions = ", ".join(sorted(set(stored) | set(local)))
            raise errors.WorkflowNotFound(
                name, f"workflow {name!r} has no version {version!r} (it has {versions})"
            )
        self.repo.retire(name, version, self.clock.now())
        self.repo.drop_schedules(name, version)
        self.refresh_limits()

    def max_concurrent(self, workflow: str) -> int | None:
        """The stored limit of ``workflow`` (None: none). Read again at most every ``LIMITS_TTL``
        seconds: a limit another engine sets counts here within that; a changed one counts at
        once, since taking a slot reads it again (``Repository.reserve_slot``)."""
        self._fresh()
        return self._limits.get(workflow)

    def refresh_limits(self) -> None:
        """Read again what other engines may have changed: limits and unregistered versions."""
        with self._limits_lock:
            self._limits = self.repo.max_concurrent()
            self._retired = self.repo.retired()
            self._limits_read = time.monotonic()
            self.latest = {}
            for name, hashes in self.order.items():
                live = [h for h in hashes if h not in self._retired]
                if live:
                    self.latest[name] = live[-1]

    def _fresh(self) -> None:
        if time.monotonic() - self._limits_read > LIMITS_TTL:
            self.refresh_limits()

    def check_actions(self, definition: models.WorkflowDefinition) -> None:
        if definition.hash in self._checked:
            return  # actions are only ever added: a definition that passed once still does
        found: list[errors.Issue] = []
        for path, step in definition.walk():
            names = []
            if isinstance(step, models.TaskStep):
                names = [step.handler, step.compensate]
            elif isinstance(step, models.PollStep):
                names = [step.check]
            for name in names:
                if isinstance(name, str) and name not in self.actions:
                    hint = issues.did_you_mean(name, self.actions)
                    found.append(
                        errors.Issue(
                            f"step {path!r} uses action {name!r}, which is not registered{hint}",
                            location=path,
                            path=definition.source_path,
                            code="unknown_action",
                        )
                    )
        if found:
            raise errors.DefinitionError(found)
        self._checked.add(definition.hash)

    def check_children(self, items: builtins.list[models.WorkflowDefinition]) -> None:
        """Every subworkflow step names a workflow registered here or in the same call, and no
        workflow starts itself, directly or through its children (it would nest without end)."""
        pending = {item.name: item for item in items}

        def lookup(name: str) -> models.WorkflowDefinition | None:
            found = pending.get(name)
            if found is None and name in self.latest:
                found = self.by_hash[self.latest[name]]
            return found

        found: list[errors.Issue] = []
        for item in items:
            for path, child in _children(item):
                if lookup(child) is None:
                    known = set(pending) | set(self.latest)
                    hint = issues.did_you_mean(child, known)
                    message = (
                        f"step {path!r} starts workflow {child!r}, which is not registered{hint}; "
                        "register it first, or in the same register call"
                    )
                else:
                    chain = _cycle_through(item.name, child, lookup)
                    if chain is None:
                        continue
                    message = (
                        f"step {path!r} starts workflow {child!r}, which leads back to "
                        f"{item.name!r} ({' -> '.join(chain)}): a workflow cannot start itself"
                    )
                found.append(
                    errors.Issue(
                        message, location=path, path=item.source_path, code="unknown_workflow"
                    )
                )
        if found:
            raise errors.DefinitionError(found)

    def resolve_action(self, target: Any) -> Callable[..., Any]:
        if callable(target):
            return target  # type: ignore[no-any-return]
        fn = self.actions.get(target)
        if fn is None:
            raise errors.DefinitionError(
                f"action {target!r} is not registered{issues.did_you_mean(target, self.actions)}"
            )
        return fn

    def definition(self, name: str) -> models.WorkflowDefinition:
        if not isinstance(name, str):
            raise errors.InputValidationError(
                f"a workflow is named by a string (the name it was registered with), not {name!r}"
            )
        self._fresh()
        key = self.latest.get(name)
        if key is None and name in self.order:
            raise errors.WorkflowNotFound(
                name, f"workflow {name!r} was unregistered; register it again to start it"
            )
        if key is None:
            raise errors.WorkflowNotFound(
                name,
                f"no workflow named {name!r} is registered{issues.did_you_mean(name, self.latest)}",
            )
        return self.by_hash[key]

    def definitions(self) -> builtins.list[models.WorkflowDefinition]:
        self._fresh()
        return [self.by_hash[h] for h in self.latest.values()]

    def definition_for(
        self, rec: repo.InstanceRecord, *, check_actions: bool = False
    ) -> models.WorkflowDefinition:
        """The exact version an instance started with: registered here, or its stored copy."""
        found = self.by_hash.get(rec.definition_hash)
        if found is not None:
            if check_actions:
                self.check_actions(found)
            return found
        body = self.repo.load_definition(rec.definition_hash)
        if body is None:
            raise errors.WorkflowNotFound(
                rec.workflow_name,
                f"definition {rec.definition_hash} of {rec.workflow_name!r} is not stored",
            )
        twin = self._registered_twin(rec, body)
        if twin is not None:
            self.by_hash[rec.definition_hash] = twin
            return self.definition_for(rec, check_actions=check_actions)
        try:
            definition = loader.load_dict(body)
        except errors.DefinitionError as exc:
            raise errors.WorkflowNotFound(
                rec.workflow_name,
                f"version {rec.workflow_version} ({rec.definition_hash}) of {rec.workflow_name!r} uses inline callables; "
                f"register that version in this process to run its instances: {exc}",
            ) from None
        self.by_hash[rec.definition_hash] = definition
        if check_actions:
            self.check_actions(definition)
        return definition

    def _registered_twin(
        self, rec: repo.InstanceRecord, body: dict[str, Any]
    ) -> models.WorkflowDefinition | None:
        """A registered definition that differs from the stored one only in callables' module names.

        A script run as ``__main__`` and the same code imported as a module name their inline
        callables differently, so their hashes differ although the graph is the same.
        """
        wanted = _without_modules(body)
        for definition in self.by_hash.values():
            same = (
                definition.name == rec.workflow_name and definition.version == rec.workflow_version
            )
            if same and _without_modules(definition.to_dict()) == wanted:
                return definition
        return None
