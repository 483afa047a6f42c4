"""``statemachine simulate FILE... --cases CASES.yaml [--min-coverage N] [--json]``.

Runs the cases on scripted actions (no database file, no worker, no real time) and prints each
case's outcome and the coverage of the workflow's graph, naming what no case reached. For CI:
exit 1 when a case's ``expect`` is not met or (``--min-coverage N``) edge coverage is below N
percent; a cases file that cannot run as written exits 2 with one line naming the case.

FILE may be several files or folders: the workflow simulated is ``--workflow``, else the only
one given, else the one the cases file is named after (``cases/order.yaml`` -> ``order``); the
others are there for its subworkflow steps. A child not given is looked for beside FILE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from statemachine import errors
from statemachine.cli import exits, output
from statemachine.cli.app import app
from statemachine.cli.definitions import yaml_files

if TYPE_CHECKING:  # loaded when the command runs: --help stays quick
    from statemachine.definition import models
    from statemachine.simulation.report import SimulationReport

STATUS_STYLES = {"completed": "green", "failed": "red", "timed_out": "red", "waiting": "yellow"}


@app.command()
def simulate(
    files: Annotated[
        list[Path],
        typer.Argument(help="The workflow's YAML file; also child workflows' files or folders."),
    ],
    cases: Annotated[Path, typer.Option("--cases", "-c", help="YAML list of cases.")],
    min_coverage: Annotated[
        float | None,
        typer.Option("--min-coverage", help="Exit 1 when edge coverage is below N percent."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Which of the workflows to simulate.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run a workflow's cases on scripted actions and report outcomes and graph coverage."""
    from statemachine.simulation.runner import simulate as run_simulation

    if min_coverage is not None and not 0 <= min_coverage <= 100:
        output.fail(f"--min-coverage must be between 0 and 100, not {min_coverage:g}")
    loaded = _load(files)
    main = _pick(loaded, workflow, cases)
    others = [d for d in loaded if d is not main] + _siblings(main, loaded)
    try:
        report = run_simulation(main, cases, definitions=others)
    except errors.StatemachineError as exc:
        message = output.one_line(exc)
        output.fail(message if message.startswith(str(cases)) else f"{cases}: {message}")
    if as_json:
        output.stdout.print_json(json.dumps(report.to_dict(), default=str))
    else:
        _print(report)
    failed = False
    for case in report.failed_cases:
        output.error_line(f"case {case.name!r}: {'; '.join(case.unmet)}")
        failed = True
    edge = report.coverage.edge_coverage
    if min_coverage is not None and edge < min_coverage:
        output.error_line(
            f"edge coverage {_pct(edge)} is below --min-coverage {min_coverage:g}%: "
            f"{len(report.coverage.uncovered_edges)} edge(s) no case took"
        )
        failed = True
    if failed:
        raise typer.Exit(exits.FAILED)


def _load(files: list[Path]) -> list[models.WorkflowDefinition]:
    from statemachine.definition import loader

    found: list[models.WorkflowDefinition] = []
    for given in files:
        if not given.exists():
            output.fail(f"{given}: no such file or folder")
        for file in yaml_files(given):
            try:
                found.append(loader.load_yaml_file(file))
            except errors.StatemachineError as exc:
                output.report_error(exc, str(file))
                raise typer.Exit(exits.USAGE) from None
    if not found:
        output.fail(f"no workflow definitions in {', '.join(map(str, files))}")
    return found


def _pick(
    loaded: list[models.WorkflowDefinition], workflow: str | None, cases: Path
) -> models.WorkflowDefinition:
    from statemachine.definition import issues

    by_name = {d.name: d for d in loaded}
    if workflow is not None:
        if workflow not in by_name:
            hint = issues.did_you_mean(workflow, by_name)
            output.fail(f"--workflow {workflow!r} is not among the definitions given{hint}")
        return by_name[workflow]
    if len(by_name) == 1:
        return loaded[0]
    if cases.stem in by_name:
        return by_name[cases.stem]
    output.fail(
        f"{len(by_name)} workflows given and the cases file is named after none of them: "
        f"say which to simulate with --workflow ({', '.join(sorted(by_name))})"
    )


def _siblings(
    main: models.WorkflowDefinition, loaded: list[models.WorkflowDefinition]
) -> list[models.WorkflowDefinition]:
    """The definitions beside ``main``'s file, when it starts a workflow not given: so
    ``simulate definitions/parent.yaml`` finds ``definitions/child.yaml``. Files there that do
    not load are passed over (they are not what is being simulated)."""
    from statemachine.definition import loader, models

    known = {d.name for d in loaded}
    wanted = {s.workflow for _, s in main.walk() if isinstance(s, models.SubworkflowStep)} - known
    if not wanted or main.source_path is None:
        return []
    found = []
    for file in yaml_files(Path(main.source_path).parent):
        try:
            definition = loader.load_yaml_file(file)
        except errors.StatemachineError:
            continue
        if definition.name not in known:
            known.add(definition.name)
            found.append(definition)
    return found


def _pct(value: float) -> str:
    return f"{int(value * 10) / 10:g}%"  # floored: 99.97 never prints as 100


def _print(report: SimulationReport) -> None:
    out = output.stdout
    table = Table(
        "case",
        "status",
        "steps run",
        "output / error",
        title=f"{report.workflow} v{report.version}",
    )
    for case in report.cases:
        if case.error is not None:
            detail = f"{case.error.get('type')}: {case.error.get('message')}"
        else:
            detail = json.dumps(case.output, default=str)
        if case.notes:
            detail += "\n" + "\n".join(case.notes)
        if case.unmet:
            detail += "\n" + "\n".join(f"not as expected: {u}" for u in case.unmet)
        style = "bold red" if case.unmet else STATUS_STYLES.get(case.status, "")
        table.add_row(case.name, Text(case.status, style=style), " > ".join(case.steps), detail)
    out.print(table)
    cov = report.coverage
    summary = Table("coverage", "reached", "percent")
    rows = [
        ("steps", sum(1 for n in cov.steps.values() if n), len(cov.steps), cov.step_coverage),
        ("edges", sum(1 for n in cov.edges.values() if n), len(cov.edges), cov.edge_coverage),
        (
            "choice branches",
            sum(1 for n in cov.choice_branches.values() if n),
            len(cov.choice_branches),
            cov.choice_coverage,
        ),
        (
            "trigger rules",
            sum(1 for r in cov.rules if r.exercised),
            len(cov.rules),
            cov.rule_coverage,
        ),
    ]
    for name, reached, total, pct in rows:
        style = "green" if reached == total else "yellow"
        summary.add_row(name, f"{reached}/{total}", Text(_pct(pct), style=style))
    out.print(summary)
    missing = (
        [f"step {s}" for s in cov.uncovered_steps]
        + [f"edge {e}" for e in cov.uncovered_edges]
        + [f"trigger rule {p.rule} of {p.step}" for p in cov.unexercised_rules]
    )
    if missing:
        out.print(Text("Not reached by any case:", style="bold yellow"))
        for line in missing:
            out.print(f"  {line}")
    else:
        out.print(Text("Every step, edge and trigger rule was reached.", style="green"))
