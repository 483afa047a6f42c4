"""Step paths: where a step sits among parallel and map branches, and its compensation's path.

A path is step names joined by ``/``, with a branch name between a container and its steps
(``fulfil/shipping/label``); a map item's branch is ``iterator@index``.
"""

from __future__ import annotations

from collections.abc import Iterator

SUFFIX = "#compensate"  # a compensation runs as a step of its own at ``path + SUFFIX``


def ancestors(path: str) -> Iterator[tuple[str, str]]:
    """(container path, branch name) of every parallel/map enclosing ``path``, outermost first."""
    parts = path.split("/")
    for i in range(1, len(parts) - 1, 2):
        yield "/".join(parts[:i]), parts[i]


def compensation_path(path: str) -> str:
    return path + SUFFIX


def is_compensation(path: str) -> bool:
    return path.endswith(SUFFIX)


def base_path(path: str) -> str:
    """The step a compensation undoes (``path`` itself for any other step)."""
    return path[: -len(SUFFIX)] if is_compensation(path) else path
