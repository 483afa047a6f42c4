"""Every problem of a definition in one pass, at the key the author wrote, with its line.

Each file of ``tests/unit/broken/`` says what it must produce, one ``# expect: LINE:COL
LOCATION | words...`` comment per issue (the words must appear in the message, in any order of
files). A file mixes field mistakes (a bad duration, an unknown enum value) with graph mistakes
(an unknown reference, an unknown expression name, a duplicate): before, the graph ones were
reported only once the field ones had been fixed. ``broken/flow/`` holds one file per kind of
data-flow edge a schema mismatch can sit on (the build-time flow check).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statemachine import DefinitionError, load_yaml, workflow

BROKEN = Path(__file__).parent / "broken"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+) \| (.*)$", re.M)


def _expected(path: Path) -> list[tuple[int, int, str, str]]:
    text = path.read_text()
    return [(int(a), int(b), loc, words) for a, b, loc, words in _EXPECT.findall(text)]


@pytest.mark.parametrize("path", sorted(BROKEN.rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_problem_once_at_its_key_as_written(path: Path) -> None:
    expected = _expected(path)
    assert expected, f"{path.name} declares no expected issue"
    with pytest.raises(DefinitionError) as caught:
        load_yaml(path)
    got = caught.value.errors
    assert [(i.line, i.column, i.location) for i in got] == [e[:3] for e in expected], str(
        caught.value
    )
    for issue, (*_, words) in zip(got, expected, strict=True):
        for part in (w.strip() for w in words.split("(did you mean")):
            assert part.rstrip(")?") in issue.message, (issue, words)
        assert issue.path == str(path)


def test_the_builder_reports_field_and_graph_problems_together() -> None:
    with pytest.raises(DefinitionError) as caught:
        (
            workflow("w")
            .timeout("5 parsecs")
            .task("a", "x", retry={"interval": "soon"}, next="b")
            .task("c", "y", next="nowhere")
            .build()
        )
    locations = {i.location for i in caught.value.errors}
    assert {"timeout", "steps[0].retry.interval", "steps[0].next", "steps[1].next"} <= locations
