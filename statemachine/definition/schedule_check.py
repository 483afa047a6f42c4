"""Load-time checks of a definition's schedules that need the whole definition: each
schedule's ``input`` must fit the workflow's input schema, or every tick would be skipped."""

from __future__ import annotations

from statemachine import errors
from statemachine.definition import issues, models, schemas


def check(definition: models.WorkflowDefinition) -> list[errors.Issue]:
    found: list[errors.Issue] = []
    if definition.input_schema is None:
        return found
    for i, schedule in enumerate(definition.schedules):
        try:
            schemas.conform(schedule.input, definition.input_schema)
        except schemas.Mismatch as exc:
            found.append(
                errors.Issue(
                    message=f"the schedule's input does not fit the workflow's inputSchema: {exc}",
                    location=issues.format_loc(("schedules", i, "input")),
                    code="schedule_input",
                )
            )
    return found
