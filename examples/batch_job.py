"""Builder twin of ``definitions/batch-job.yaml``: submit, poll until done (or an hour), report."""

from __future__ import annotations

from statemachine.definition.builder import workflow
from statemachine.definition.models import WorkflowDefinition

JOB = {"type": "object", "required": ["dataset"], "properties": {"dataset": {"type": "string"}}}
SUBMITTED = {"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string"}}}


def build() -> WorkflowDefinition:
    return (
        workflow("batch-job", input_schema=JOB, version="1", title="Batch job")
        .task(
            "submit",
            "submitBatchJob",
            output_schema=SUBMITTED,
            input={"dataset": "${{ input.dataset }}"},
        )
        .poll(
            "wait-for-job",
            check="checkBatchStatus",  # returns {"done": bool, "result": ...}
            input={"job_id": "${{ submit.job_id }}"},
            interval="30s",
            timeout="1h",
        )
        .task("report", "sendReport", input={"result": "${{ prev }}"})
        .build()
    )


if __name__ == "__main__":
    print(build().to_mermaid(), end="")
