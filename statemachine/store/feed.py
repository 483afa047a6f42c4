"""Following history as it is written, by any process: a reader's position and, on Postgres,
the gaps it waits on. Used by the server's SSE streams; anything that follows history (a CLI's
``logs --follow``) can use it the same way: ``Feed(repo, instance_id or None, cursor).read()``.
"""

from __future__ import annotations

from statemachine.store.port import Store
from statemachine.store.records import FeedEntry

BATCH = 200  # entries read at a time


class Feed:
    """One reader's position in the history: what it has sent, and on Postgres the gaps it
    waits on. Postgres numbers history rows when they are written, not when they commit, so
    a row may become visible after a higher one; a gap below a visible row is skipped only once
    every transaction that was running when it was seen has ended (``feed_settled``)."""

    def __init__(self, repo: Store, instance_id: str | None, cursor: int) -> None:
        self.repo = repo
        self.instance_id = instance_id
        self.cursor = cursor
        self.final = cursor  # gaps at or below this position are final
        self.waiting: tuple[int | None, int] | None = None  # (horizon, highest position seen)
        # one instance's history is numbered under its row's lock: no gap there, ever
        self.gaps = instance_id is None and repo.dialect == "postgresql"

    def read(self) -> list[FeedEntry]:
        """The next entries in order (blocking: run it in a thread)."""
        if self.waiting is not None and self.repo.feed_settled(self.waiting[0]):
            self.final, self.waiting = max(self.final, self.waiting[1]), None
        rows = self.repo.history_since(self.instance_id, self.cursor, BATCH)
        out: list[FeedEntry] = []
        for row in rows:
            if self.gaps and row.cursor != self.cursor + 1 and row.cursor > self.final:
                if self.waiting is None:  # the horizon is taken after the read: it covers it
                    self.waiting = (self.repo.feed_horizon(), rows[-1].cursor)
                break
            out.append(row)
            self.cursor = row.cursor
        return out
