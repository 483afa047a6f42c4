"""The YAML loader: key styles, step keys, error handling keys, and exact positions of problems."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from statemachine import errors, load_yaml
from statemachine.definition import loader, models
from statemachine.errors import DefinitionError
from statemachine.runtime import retries


def load(text: str) -> models.WorkflowDefinition:
    return loader.load_yaml_text(text, path="w.yaml")


def refused(text: str) -> list[errors.Issue]:
    with pytest.raises(errors.DefinitionError) as info:
        load(text)
    return info.value.errors


def only_issue(text: str) -> errors.Issue:
    found = refused(text)
    assert len(found) == 1, found
    return found[0]


def task(definition: models.WorkflowDefinition, name: str) -> models.TaskStep:
    step = definition.step_index()[name]
    assert isinstance(step, models.TaskStep)
    return step


CAMEL = """\
id: orders
version: 2
defaultRetry: {maxAttempts: 5, interval: 2s, backoffRate: 3, maxInterval: 1m}
steps:
  - id: charge
    action: chargeCard
    maxRetries: 2
    retryDelay: 5s
    onError: branch
    errorBranch: refund
  - id: ship
    action: ship
    dependsOn: [charge]
  - id: fan
    type: parallel
    dependsOn: [ship]
    maxConcurrency: 2
    branches:
      - name: left
        steps: [{id: l, action: x}]
  - id: refund
    action: refund
"""

SNAKE = """\
name: orders
version: 2
default_retry: {max_attempts: 5, interval: 2s, backoff_rate: 3, max_interval: 1m}
steps:
  - name: charge
    action: chargeCard
    max_retries: 2
    retry_delay: 5s
    on_error: branch
    error_branch: refund
  - name: ship
    action: ship
    depends_on: [charge]
  - name: fan
    type: parallel
    depends_on: [ship]
    max_concurrency: 2
    branches:
      - name: left
        steps: [{name: l, action: x}]
  - name: refund
    action: refund
"""


def test_camel_and_snake_case_keys_give_the_same_definition() -> None:
    camel, snake = load(CAMEL), load(SNAKE)
    assert camel.to_dict() == snake.to_dict()
    assert camel.hash == snake.hash
    assert camel.default_retry == models.RetryPolicy(
        max_attempts=5, interval=2, backoff_rate=3, max_interval=60
    )
    charge = task(camel, "charge")
    assert (charge.on_error, charge.error_next) == ("branch", "refund")
    assert camel.step_index()["ship"].depends_on == ("charge",)


def test_the_same_key_in_both_styles_is_refused() -> None:
    issue = only_issue(
        "id: w\nsteps:\n  - id: a\n    action: x\n    dependsOn: []\n    depends_on: []\n"
    )
    assert (issue.line, issue.column, issue.location) == (6, 5, "steps[0].depends_on")
    assert "'dependsOn' and 'depends_on'" in issue.message


def test_id_and_name_together_are_the_id_and_the_display_title() -> None:
    """workflow.do's shape: every definition has `id:` and `name:` at the top, and steps may too."""
    definition = load(
        "id: order-processing\nname: Process Customer Order\nsteps:\n"
        "  - id: validate\n    name: Validate the order\n    action: x\n"
        "  - name: ship\n    action: y\n"
    )
    assert (definition.name, definition.title) == ("order-processing", "Process Customer Order")
    validate, ship = definition.steps
    assert (validate.name, validate.title) == ("validate", "Validate the order")
    assert (ship.name, ship.title) == ("ship", None)
    assert "Validate the order" in definition.to_mermaid()
    assert 'label="Validate the order"' in definition.to_dot()
    again = load(definition.to_yaml())
    assert again.hash == definition.hash and again.steps[0].title == "Validate the order"


def test_name_beside_id_and_title_is_a_duplicate_title() -> None:
    issue = only_issue("id: w\nname: A\ntitle: B\nsteps:\n  - id: a\n    action: x\n")
    assert issue.location == "title" and "'name' and 'title'" in issue.message


def test_name_and_id_are_the_same_key() -> None:
    by_id = load("id: w\nsteps:\n  - id: a\n    action: x\n")
    by_name = load("name: w\nsteps:\n  - name: a\n    action: x\n")
    assert by_id.to_dict() == by_name.to_dict()
    assert by_name.name == "w" and by_name.steps[0].name == "a"


def test_a_workflow_without_an_id() -> None:
    issue = only_issue("title: nameless\nsteps:\n  - id: a\n    action: x\n")
    assert "needs an id (or name)" in issue.message
    assert (issue.line, issue.column) == (1, 1)


def test_params_and_input_are_the_same_key() -> None:
    with_params = load("id: w\nsteps:\n  - id: a\n    action: x\n    params: {n: 1}\n")
    with_input = load("id: w\nsteps:\n  - id: a\n    action: x\n    input: {n: 1}\n")
    assert task(with_params, "a").input == {"n": 1}
    assert with_params.to_dict() == with_input.to_dict()


def test_templates_are_kept_as_written() -> None:
    definition = load(
        "id: w\nsteps:\n  - id: a\n    action: x\n    params:\n"
        "      order: ${{ input.orderId }}\n"
        '      note: "order ${{ input.orderId }} of ${{ input.customer }}"\n'
        "      nested:\n        - ${{ input.items }}\n"
    )
    assert task(definition, "a").input == {
        "order": "${{ input.orderId }}",
        "note": "order ${{ input.orderId }} of ${{ input.customer }}",
        "nested": ["${{ input.items }}"],
    }


def test_a_condition_may_be_wrapped_in_a_template() -> None:
    definition = load(
        "id: w\nsteps:\n  - id: a\n    action: x\n  - id: b\n    action: y\n"
        "    dependsOn: [a]\n    condition: ${{ a.ok == true }}\n"
    )
    assert definition.step_index()["b"].condition == "a.ok == true"


def test_wait_on_a_task_is_a_durable_delay() -> None:
    definition = load("id: w\nsteps:\n  - id: a\n    action: x\n    wait: 3d\n")
    assert task(definition, "a").delay == 3 * 86400
    assert definition.to_dict()["steps"][0]["wait"] == "3d"


def test_a_bad_wait_points_at_its_value() -> None:
    issue = only_issue("id: w\nsteps:\n  - id: a\n    action: x\n    wait: soon\n")
    assert (issue.line, issue.column, issue.location) == (5, 11, "steps[0].wait")
    assert "'soon' is not a duration" in issue.message


ON_ERROR = """\
id: w
steps:
  - id: a
    action: x
    onError: fail
  - id: b
    action: x
    onError: continue
  - id: c
    action: x
    onError: retry
  - id: d
    action: x
    onError: branch
    errorBranch: e
  - id: e
    action: x
    end: true
"""


def test_on_error_values() -> None:
    definition = load(ON_ERROR)
    steps = {name: task(definition, name) for name in "abcd"}
    assert steps["a"].on_error == "fail" and steps["a"].retry is None
    assert steps["b"].on_error == "continue"
    assert steps["c"].on_error == "fail" and steps["c"].retry == models.RetryPolicy()
    assert (steps["d"].on_error, steps["d"].error_next) == ("branch", "e")


def test_error_branch_alone_means_on_error_branch() -> None:
    definition = load(ON_ERROR.replace("    onError: branch\n", ""))
    assert task(definition, "d").on_error == "branch"


def test_an_unknown_on_error_value_is_refused_at_its_line() -> None:
    issue = only_issue(ON_ERROR.replace("onError: continue", "onError: ignore"))
    assert (issue.line, issue.column, issue.location) == (8, 14, "steps[1].onError")


PARALLEL = """\
id: w
steps:
  - id: fan
    type: parallel
    onError: {mode}
    branches:
      - name: left
        steps: [{{id: l, action: x}}]
      - name: right
        steps: [{{id: r, action: x}}]
"""


@pytest.mark.parametrize("mode", ["fail-fast", "wait-all"])
def test_on_error_on_a_parallel_step_is_its_failure_mode(mode: str) -> None:
    step = load(PARALLEL.format(mode=mode)).steps[0]
    assert isinstance(step, models.ParallelStep)
    assert step.failure == mode
    assert step.on_error == "fail"


def test_wait_all_on_a_task_is_refused() -> None:
    issue = only_issue("id: w\nsteps:\n  - id: a\n    action: x\n    onError: wait-all\n")
    assert (issue.line, issue.column) == (5, 14)
    assert "only for parallel steps" in issue.message


def test_max_retries_counts_retries_after_the_first_try() -> None:
    definition = load(
        "id: w\nsteps:\n  - id: a\n    action: x\n    maxRetries: 3\n    retryDelay: 1m\n"
    )
    policy = task(definition, "a").retry
    # retryDelay is the first delay: the cap (default 30s) is raised to it
    assert policy == models.RetryPolicy(max_attempts=4, interval=60, max_interval=60)
    assert policy is not None and retries.delay(policy, 1) == 60
    no_retry = load("id: w\nsteps:\n  - id: a\n    action: x\n    maxRetries: 0\n")
    retry = task(no_retry, "a").retry
    assert retry is not None and retry.max_attempts == 1


def test_a_negative_max_retries_is_refused() -> None:
    issue = only_issue("id: w\nsteps:\n  - id: a\n    action: x\n    maxRetries: -1\n")
    assert (issue.line, issue.column, issue.location) == (5, 17, "steps[0].maxRetries")


DAG = """\
id: w
steps:
  - id: a
    action: x
  - id: b
    action: x
    dependsOn: [a]
    trigger: {rule}
"""


@pytest.mark.parametrize("rule", models.TRIGGER_RULES)
def test_trigger_rules(rule: str) -> None:
    assert load(DAG.format(rule=rule)).step_index()["b"].trigger == rule


def test_the_default_trigger_rule() -> None:
    step = load(DAG.replace("    trigger: {rule}\n", "")).step_index()["b"]
    assert step.trigger == "none_failed_min_one_success"


def test_an_unknown_trigger_rule_is_refused_at_its_value() -> None:
    issue = only_issue(DAG.format(rule="all_sucess"))
    assert (issue.line, issue.column, issue.location) == (8, 14, "steps[1].trigger")
    assert "all_success" in issue.message


def test_workflow_triggers() -> None:
    definition = load(
        "id: w\ntriggers:\n  - event: Customer.created\n  - Customer.deleted\n"
        '  - event: Customer.upgraded\n    condition: plan === "enterprise"\n'
        "steps:\n  - id: a\n    action: x\n"
    )
    assert definition.triggers == (
        models.Trigger(event="Customer.created"),
        models.Trigger(event="Customer.deleted"),
        models.Trigger(event="Customer.upgraded", condition='plan === "enterprise"'),
    )


def test_a_trigger_without_an_event_is_refused() -> None:
    found = refused(
        "id: w\ntriggers:\n  - condition: plan == 1\nsteps:\n  - id: a\n    action: x\n"
    )
    assert [(i.location, i.line) for i in found] == [("triggers[0].event", 3)]


UNKNOWN_KEYS = """\
id: w
stesp: []
steps:
  - id: a
    action: x
    dependson: [b]
  - id: b
    action: x
    retry: {maxAttempt: 2}
"""


def test_unknown_keys_are_reported_at_the_key_with_a_hint() -> None:
    found = refused(UNKNOWN_KEYS)
    assert [(i.line, i.column, i.location) for i in found] == [
        (2, 1, "stesp"),
        (6, 5, "steps[0].dependson"),
        (9, 13, "steps[1].retry.maxAttempt"),
    ]
    assert "(did you mean 'steps'?)" in found[0].message
    assert "(did you mean 'dependsOn'?)" in found[1].message
    assert "(did you mean 'maxAttempts'?)" in found[2].message
    assert str(found[1]) == (
        "w.yaml:6:5: steps[0].dependson: unknown key 'dependson' on a task step (did you mean 'dependsOn'?)"
    )


def test_a_misspelt_action_is_named() -> None:
    issue = only_issue("id: w\nsteps:\n  - id: a\n    acton: x\n")
    assert (issue.line, issue.column, issue.location) == (3, 5, "steps[0]")
    assert "did you mean 'action' instead of 'acton'" in issue.message


def test_an_unknown_step_type_has_a_hint() -> None:
    issue = only_issue("id: w\nsteps:\n  - id: a\n    type: paralel\n")
    assert (issue.line, issue.column, issue.location) == (4, 11, "steps[0].type")
    assert "(did you mean 'parallel'?)" in issue.message


def test_an_unknown_next_has_a_hint_at_its_value() -> None:
    found = refused("id: w\nsteps:\n  - id: charge\n    action: x\n    next: chrage\n")
    assert [(i.line, i.column, i.location) for i in found] == [(5, 11, "steps[0].next")]
    assert "(did you mean 'charge'?)" in found[0].message


def test_an_inline_callable_marker_is_refused_clearly() -> None:
    issue = only_issue(
        "id: w\nsteps:\n  - id: a\n    action: {callable: shop.charge, loadable: false}\n"
    )
    assert (issue.line, issue.column, issue.location) == (4, 13, "steps[0].action")
    assert "'shop.charge' is an inline Python callable" in issue.message
    assert "register it as an action" in issue.message


def test_a_dumped_builder_callable_cannot_be_loaded_back() -> None:
    from statemachine.definition import builder

    def charge(data: object) -> object:
        return data

    dumped = builder.workflow("w").task("a", charge).build().to_yaml()
    assert "loadable: false" in dumped
    with pytest.raises(errors.DefinitionError) as info:
        loader.load_yaml_text(dumped)
    assert len(info.value.errors) == 1, info.value.errors  # no extra "Field required" for it
    assert "inline Python callable" in str(info.value)


def test_on_off_yes_no_stay_strings() -> None:
    definition = load(
        "id: w\nsteps:\n  - id: a\n    action: x\n"
        "    params: {a: on, b: off, c: yes, d: no, e: true, f: false, g: null}\n"
    )
    assert task(definition, "a").input == {
        "a": "on",
        "b": "off",
        "c": "yes",
        "d": "no",
        "e": True,
        "f": False,
        "g": None,
    }


def good(name: str) -> str:
    return f"id: {name}\nsteps:\n  - id: a\n    action: x\n"


def test_load_definitions_reads_a_folder_recursively(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "one.yaml").write_text(good("one"))
    (tmp_path / "nested" / "two.yml").write_text(good("two"))
    (tmp_path / "README.md").write_text("not a definition")
    definitions = loader.load_definitions(tmp_path)
    assert sorted(d.name for d in definitions) == ["one", "two"]


def test_load_definitions_reports_every_bad_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(good("good"))
    (tmp_path / "bad1.yaml").write_text(
        "id: b1\nsteps:\n  - id: a\n    action: x\n    next: nowhere\n"
    )
    (tmp_path / "bad2.yaml").write_text(
        "id: b2\nsteps:\n  - id: a\n    action: x\n    onErorr: fail\n"
    )
    with pytest.raises(errors.DefinitionError) as info:
        loader.load_definitions(tmp_path)
    found = info.value.errors
    assert [(Path(str(i.path)).name, i.line, i.column) for i in found] == [
        ("bad1.yaml", 5, 11),
        ("bad2.yaml", 5, 5),
    ]
    assert f"{tmp_path / 'bad1.yaml'}:5:11: steps[0].next:" in str(info.value)


def test_load_definitions_refuses_the_same_workflow_twice(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(good("same"))
    (tmp_path / "b.yaml").write_text(good("same"))
    with pytest.raises(errors.DefinitionError, match="also defined in"):
        loader.load_definitions(tmp_path)


def test_load_yaml_takes_a_path_or_text(tmp_path: Path) -> None:
    file = tmp_path / "w.yaml"
    file.write_text(good("w"))
    assert loader.load_yaml(file).name == "w"
    assert loader.load_yaml(str(file)).name == "w"
    assert loader.load_yaml(good("w")).hash == loader.load_yaml(file).hash


def test_load_yaml_leaves_the_garbage_collector_as_it_found_it() -> None:
    """Loading pauses the cyclic collector (see loader._collector_paused), then restores it,
    whether the definition loads or not, and never turns on one the caller turned off."""
    good = "id: gc-ok\nversion: 1\nsteps:\n  - id: a\n    action: noop\n"
    bad = "id: gc-bad\nversion: 1\nsteps:\n  - id: a\n    actoin: noop\n"
    assert gc.isenabled()
    assert load_yaml(good).name == "gc-ok"
    assert gc.isenabled()
    with pytest.raises(DefinitionError):
        load_yaml(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_yaml(good)
        assert not gc.isenabled()
    finally:
        gc.enable()
