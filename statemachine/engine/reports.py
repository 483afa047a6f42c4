"""What a worker logs as it commits: a step's failure or retry, an instance's failure, one
line each (the ``statemachine.worker`` logger)."""

from __future__ import annotations

import logging

from statemachine.runtime import interpreter as interp
from statemachine.store import repository as repo

# what an operator watches a worker for; execute() and run_due() return it to their caller,
# and a script that shows a failure on purpose should not print it twice
_reports = logging.getLogger("statemachine.worker")
REPORTED = {
    "workflow.step.retry": logging.INFO,  # expected now and then: not shown by default
    "workflow.step.failed": logging.WARNING,
    "workflow.failed": logging.ERROR,
    "workflow.timed_out": logging.ERROR,
}


def report(rec: repo.InstanceRecord, item: interp.HistoryItem) -> None:
    """A step failure, retry, or instance failure, as one log line once it is committed."""
    error = item.data.get("error")
    if not isinstance(error, dict):
        error = {}
    what = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    where = f"instance {rec.id} ({rec.workflow_name})"
    if item.type == "workflow.step.retry":
        text = f"{where}: step {item.step} failed (attempt {item.data.get('attempt')}), retrying"
        text += f" in {item.data.get('delay', 0):g}s: {what}"
    elif item.type == "workflow.step.failed":
        text = f"{where}: step {item.step} failed (attempt {item.data.get('attempt')}): {what}"
    elif item.type == "workflow.timed_out":
        text = f"{where} timed out: {error.get('message', '')}"
    else:
        step = f" at step {error['step']}" if error.get("step") else ""
        text = f"{where} failed{step}: {what}"
    extra = {"instance_id": rec.id, "workflow": rec.workflow_name, "step": item.step}
    _reports.log(REPORTED[item.type], text, extra={**extra, "event": item.type})
