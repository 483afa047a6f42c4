"""Where each part of a definition was written, so an issue points at the author's own line.

The reader works on canonical locations (``steps[0].maxAttempts``) while the author may have
written ``steps[0].max_attempts``; it notes each canonical location with the source location it
came from, and ``place`` gives any issue, from pydantic, validation or the reader, the line and
column of that source.
"""

from __future__ import annotations

import functools

from statemachine import errors
from statemachine.definition import issues, yaml_source

Loc = issues.Loc


class Positions:
    """The notes of one document: (canonical location, source location), in reading order."""

    def __init__(self, doc: yaml_source.SourceDocument) -> None:
        self.doc = doc
        self.notes: list[tuple[Loc, Loc]] = []  # (canonical location, source location)

    def note(self, canon: Loc, source: Loc) -> None:
        self.notes.append((canon, source))

    def written(self, canon: Loc, fallback: Loc) -> Loc:
        """Where ``canon`` was noted last (its key as written), else ``fallback``."""
        for noted, source in reversed(self.notes):
            if noted == canon:
                return source
        return fallback

    @functools.cached_property
    def where(self) -> dict[str, Loc]:
        """Canonical location text -> source location; only needed once there are issues."""
        return {issues.format_loc(canon): source for canon, source in self.notes}

    def place(self, issue: errors.Issue) -> errors.Issue:
        """Give an issue the line and column of the source node its location came from."""
        parts = issues.parse_loc(issue.location)
        source: Loc | None = None
        for cut in range(len(parts), 0, -1):
            known = self.where.get(issues.format_loc(parts[:cut]))
            if known is not None:
                source = (*known, *parts[cut:])
                break
        line, col = 0, 0
        location = issue.location
        if source is not None:
            location = issues.format_loc(source)  # the keys as the author wrote them
            at_key = issue.code in {"extra_forbidden", "unknown_key", "duplicate_key"}
            line, col = self.doc.key_position(source) if at_key else self.doc.position(source)
        if not line:
            line, col = 1, 1
        return errors.Issue(issue.message, location, self.doc.path, line, col, issue.code)
