"""Every validation rule, reported from YAML at the author's own line and column."""

from __future__ import annotations

import pytest

from statemachine import DefinitionError, load_yaml

CASES = [
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: charge\n    action: noop\n    next: chrage\n', 'unknown_reference', 6, 11, 'steps[0].next', "unknown step 'chrage' in next", id='unknown_reference'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n  - id: a\n    action: noop\n', 'duplicate_name', 6, 9, 'steps[1].id', "duplicate step name 'a' (first at steps[0])", id='duplicate_name'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a/b\n    action: noop\n', 'bad_name', 4, 9, 'steps[0].id', "step name 'a/b' must be non-empty, without whites", id='bad_name'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    dependsOn: [b]\n  - id: b\n    action: noop\n    dependsOn: [a]\n  - id: c\n    action: noop\n', 'cycle', 6, 17, 'steps[0].dependsOn[0]', 'dependsOn cycle: a -> b -> a', id='cycle'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n  - id: b\n    action: noop\n    dependsOn: [b]\n', 'self_reference', 8, 17, 'steps[1].dependsOn[0]', "step 'b' depends on itself", id='self_reference'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    end: true\n  - id: b\n    action: noop\n', 'unreachable', 7, 5, 'steps[1]', "step 'b' can never run: no next, choice, loop or", id='unreachable'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    next: b\n  - id: b\n    action: noop\n    next: a\n', 'no_end', 4, 5, 'steps[0]', "these steps loop with no way to finish: 'a', 'b'", id='no_end'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: p\n    type: poll\n    action: noop\n    interval: 1s\n', 'poll_unbounded', 4, 5, 'steps[0]', 'a poll step needs timeout or maxAttempts, or it ', id='poll_unbounded'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n  - id: l\n    type: loop\n    condition: a.more\n    target: a\n', 'loop_unbounded', 6, 5, 'steps[1]', 'a loop step needs maxIterations or timeout, or i', id='loop_unbounded'),
    pytest.param("id: w\nversion: 1\nsteps:\n  - id: l\n    type: loop\n    condition: 'true'\n    target: a\n    maxIterations: 3\n  - id: a\n    action: noop\n", 'loop_target_forward', 7, 13, 'steps[0].target', "loop target 'a' comes after the loop", id='loop_target_forward'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: w\n    type: wait\n', 'wait_kind', 4, 5, 'steps[0]', 'a wait step needs exactly one of duration, until', id='wait_kind'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: w\n    type: wait\n    duration: 1h\n    timeout: 2h\n', 'wait_timeout', 7, 14, 'steps[0].timeout', 'timeout only bounds an event wait', id='wait_timeout'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: w\n    type: wait\n    duration: soon\n', 'value_error', 6, 15, 'steps[0].duration', "'soon' is not a duration", id='bad_duration'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    next: b\n  - id: b\n    action: noop\n    dependsOn: [a]\n', 'scope_mixing', 6, 11, 'steps[0].next', 'this scope uses dependsOn (a DAG), so next/choic', id='scope_mixing'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: p\n    type: parallel\n    branches: []\n', 'empty_parallel', 6, 15, 'steps[0].branches', 'a parallel step needs at least one branch', id='empty_parallel'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: c\n    type: choice\n    choices: []\n    default: d\n  - id: d\n    action: noop\n', 'empty_choice', 6, 14, 'steps[0].choices', 'a choice step needs at least one choice', id='empty_choice'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n  - id: b\n    action: noop\n    dependsOn: [a]\n    condition: a.risk <\n', 'bad_expression', 9, 16, 'steps[1].condition', "expression 'a.risk <': syntax error at the end: ", id='bad_expression'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: score\n    action: noop\n  - id: b\n    action: noop\n    dependsOn: [score]\n    condition: scor.risk < 0.3\n', 'unknown_name', 9, 16, 'steps[1].condition', "unknown name 'scor' in expression 'scor.risk < 0", id='unknown_name'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    onError: branch\n', 'error_branch', 6, 14, 'steps[0].onError', 'onError: branch needs errorBranch naming the ste', id='error_branch'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    trigger: all_done\n', 'trigger_rule', 6, 14, 'steps[0].trigger', "trigger 'all_done' has no effect: trigger rules ", id='trigger_rule'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    maxRetries: -1\n', 'retry', 6, 17, 'steps[0].maxRetries', 'maxRetries must be a whole number >= 0, got -1', id='retry'),
    pytest.param('id: w\nversion: 1\nsteps:\n  - id: a\n    action: noop\n    timeout: 0s\n', 'bad_timeout', 6, 14, 'steps[0].timeout', 'a timeout must be greater than 0', id='bad_timeout'),
    pytest.param('id: w\nsteps: []\n', 'empty_scope', 2, 8, 'steps', 'this workflow has no steps', id='empty_scope'),
    pytest.param("id: w\nversion: 1\nsteps:\n  - id: s\n    type: subworkflow\n    workflow: ''\n", 'string_too_short', 6, 15, 'steps[0].workflow', 'String should have at least 1 character', id='subworkflow'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "code", "line", "column", "location", "message"), CASES)
def test_rule_is_reported_at_its_line(
    text: str, code: str, line: int, column: int, location: str, message: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        load_yaml(text)
    found = [(i.code, i.line, i.column, i.location) for i in info.value.errors]
    assert (code, line, column, location) in found, found
    issue = next(i for i in info.value.errors if i.code == code)
    assert message in issue.message
    assert f"<definition>:{line}:{column}: {location}: " in str(info.value)


@pytest.mark.parametrize("case", ["unknown_reference", "unknown_name"])
def test_near_miss_names_get_a_suggestion(case: str) -> None:
    text = next(p.values[0] for p in CASES if p.id == case)
    with pytest.raises(DefinitionError) as info:
        load_yaml(text)
    assert "did you mean" in str(info.value)
