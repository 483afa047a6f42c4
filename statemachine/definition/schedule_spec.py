"""The arithmetic of schedules: cron expressions (``cronsim``), fixed intervals and time zones
(``zoneinfo``), all in UTC at the edges.

Cron is read in the schedule's own time zone, with cron's DST rules as ``cronsim`` keeps them
(Debian cron's): a time skipped by the spring-forward change fires once, at the change; a time
repeated by the fall-back change fires once, the first time; a job of every hour fires in both
repeated hours. ``every`` ticks are multiples of the interval since the Unix epoch, so every
engine computes the same ticks whatever time it registered. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from statemachine.definition import issues

CRON_HELP = "five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'"


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone; a ValueError naming the nearest one otherwise."""
    if name in ("UTC", "Z") or name in _zone_names():
        return "UTC" if name == "Z" else name
    raise ValueError(f"unknown timezone {name!r}{issues.did_you_mean(name, _zone_names())}")


def check_cron(expr: str) -> str:
    """``expr`` if ``cronsim`` reads it; a ValueError saying which field is wrong otherwise."""
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {expr!r}: {exc} ({CRON_HELP})") from None
    return expr


def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo("UTC" if name == "Z" else name)


def next_tick(cron: str | None, every: float | None, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (aware), in UTC."""
    if every is not None:
        epoch = after.timestamp()
        n = math.floor(epoch / every) + 1
        return datetime.fromtimestamp(n * every, UTC)
    assert cron is not None  # the model holds exactly one of them
    local = after.astimezone(zone(timezone))
    return next(CronSim(cron, local)).astimezone(UTC)


def due_ticks(
    cron: str | None, every: float | None, timezone: str, first: datetime, now: datetime
) -> tuple[list[datetime], datetime]:
    """The due ticks from ``first`` (a tick) up to ``now``, the latest ``KEEP`` of them, and the
    first tick after ``now``. A long outage is not walked tick by tick: past ``KEEP`` ticks,
    the latest ones are counted back from ``now``."""
    ticks: list[datetime] = []
    tick = first
    while tick <= now and len(ticks) <= KEEP:
        ticks.append(tick)
        tick = next_tick(cron, every, timezone, tick)
    if tick <= now:
        ticks = _latest(cron, every, timezone, now)
        tick = next_tick(cron, every, timezone, now)
    return ticks[-KEEP:], tick


def _latest(cron: str | None, every: float | None, timezone: str, now: datetime) -> list[datetime]:
    """The last ``KEEP`` ticks at or before ``now``, oldest first."""
    if every is not None:
        last = math.floor(now.timestamp() / every)
        return [datetime.fromtimestamp((last - i) * every, UTC) for i in range(KEEP - 1, -1, -1)]
    assert cron is not None
    back = CronSim(cron, (now + timedelta(seconds=1)).astimezone(zone(timezone)), reverse=True)
    found: list[datetime] = []
    for local in back:
        at = local.astimezone(UTC)
        if at <= now:
            found.append(at)
        if len(found) == KEEP:
            break
    return found[::-1]


#: ``catchup: all`` starts at most this many missed ticks (the latest ones)
KEEP = 100
