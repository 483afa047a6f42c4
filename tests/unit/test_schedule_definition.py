"""Schedules in a definition: read from YAML and the builder, checked at load with the author's
line and a suggestion, and the tick arithmetic across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from statemachine import DefinitionError, load_yaml, workflow
from statemachine.definition import schedule_spec

BASE = "id: nightly\nschedules:\n{body}steps:\n  - id: a\n    type: pass\n    end: true\n"


def _load(body: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        load_yaml(BASE.format(body=body))
    return info.value


@pytest.mark.parametrize(
    ("body", "line", "column", "location", "message"),
    [
        ('  - cron: "61 * * * *"\n', 3, 11, "schedules[0].cron", "bad cron expression '61 * * * *'"),
        ("  - cron: '0 2 * * *'\n    timezone: Europe/Pari\n", 4, 15, "schedules[0].timezone",
         "unknown timezone 'Europe/Pari' (did you mean 'Europe/Paris'?)"),
        ("  - every: 15m\n    overlap: skp\n", 4, 14, "schedules[0].overlap",
         "(did you mean 'skip'?)"),
        ("  - every: 1h\n  - every: 15m\n    catchup: al\n", 5, 14, "schedules[1].catchup",
         "'al' is not one of none, latest, all (did you mean 'all'?)"),
        ("  - timezone: UTC\n", 3, 5, "schedules[0]", "exactly one of cron and every"),
        ("  - every: 500ms\n", 3, 12, "schedules[0].every", "a whole number of seconds, 1s or more"),
        ("  - every: 1h\n    cronn: '* * * * *'\n", 4, 5, "schedules[0].cronn",
         "did you mean 'cron'?"),
    ],
)  # fmt: skip
def test_bad_schedule_is_reported_at_its_line(
    body: str, line: int, column: int, location: str, message: str
) -> None:
    error = _load(body)
    found = {(i.line, i.column, i.location): i.message for i in error.errors}
    assert (line, column, location) in found, found
    assert message in found[(line, column, location)]


def test_yaml_and_builder_give_the_same_definition() -> None:
    text = BASE.format(
        body="  - cron: '0 2 * * *'\n    timezone: Europe/Paris\n    input: {kind: daily}\n"
        "    overlap: skip\n    catchup: latest\n  - every: 15m\n"
    )
    from_yaml = load_yaml(text)
    built = (
        workflow("nightly")
        .schedule("0 2 * * *", timezone="Europe/Paris", input={"kind": "daily"}, catchup="latest")
        .schedule(every="15m")
        .pass_("a", end=True)
        .build()
    )
    assert from_yaml.hash == built.hash
    assert [s.spec for s in built.schedules] == ["0 2 * * *", "every 900s"]
    assert load_yaml(built.to_yaml()).hash == built.hash


def test_builder_refuses_a_bad_schedule_at_once() -> None:
    with pytest.raises(DefinitionError, match=r"schedules\[1\].timezone: unknown timezone"):
        workflow("w").schedule(every="1h").schedule("0 2 * * *", timezone="Mars/Olympus")


def _daily_ticks(cron: str, tz: str, day: datetime, count: int = 3) -> list[datetime]:
    out, at = [], day
    for _ in range(count):
        at = schedule_spec.next_tick(cron, None, tz, at)
        out.append(at)
    return out


@pytest.mark.parametrize(
    ("tz", "cron", "before", "expected_utc"),
    [
        # spring forward: 02:30 does not exist that night; it fires once, at the change (03:00)
        ("Europe/Paris", "30 2 * * *", datetime(2030, 3, 30, 12, tzinfo=UTC),
         [datetime(2030, 3, 31, 1, 0, tzinfo=UTC), datetime(2030, 4, 1, 0, 30, tzinfo=UTC)]),
        ("America/New_York", "30 2 * * *", datetime(2030, 3, 9, 12, tzinfo=UTC),
         [datetime(2030, 3, 10, 7, 0, tzinfo=UTC), datetime(2030, 3, 11, 6, 30, tzinfo=UTC)]),
        # fall back: 02:30 (Paris) and 01:30 (New York) happen twice; they fire once, the first
        ("Europe/Paris", "30 2 * * *", datetime(2030, 10, 26, 12, tzinfo=UTC),
         [datetime(2030, 10, 27, 0, 30, tzinfo=UTC), datetime(2030, 10, 28, 1, 30, tzinfo=UTC)]),
        ("America/New_York", "30 1 * * *", datetime(2030, 11, 2, 12, tzinfo=UTC),
         [datetime(2030, 11, 3, 5, 30, tzinfo=UTC), datetime(2030, 11, 4, 6, 30, tzinfo=UTC)]),
    ],
)  # fmt: skip
def test_dst_days_fire_once(
    tz: str, cron: str, before: datetime, expected_utc: list[datetime]
) -> None:
    assert _daily_ticks(cron, tz, before, 2) == expected_utc


def test_every_ticks_are_the_same_for_every_engine() -> None:
    at = datetime(2030, 1, 1, 0, 7, 12, tzinfo=UTC)
    assert schedule_spec.next_tick(None, 900, "UTC", at) == datetime(2030, 1, 1, 0, 15, tzinfo=UTC)


def test_a_schedule_input_that_misses_the_input_schema_is_reported_at_its_line() -> None:
    text = (
        "id: nightly\ninputSchema:\n  type: object\n  required: [kind]\nschedules:\n"
        "  - every: 1h\n    input: {kynd: daily}\nsteps:\n  - id: a\n    type: pass\n    end: true\n"
    )
    with pytest.raises(DefinitionError) as info:
        load_yaml(text)
    (issue,) = info.value.errors
    assert (issue.line, issue.location, issue.code) == (7, "schedules[0].input", "schedule_input")
    assert "kind" in issue.message


def test_schedules_are_drawn_on_the_graph() -> None:
    wf = (
        workflow("nightly")
        .schedule("0 2 * * *", timezone="Europe/Paris")
        .pass_("a", end=True)
        .build()
    )
    assert 'schedule_0[/"0 2 * * * (Europe/Paris)"/] -.-> start' in wf.to_mermaid()
