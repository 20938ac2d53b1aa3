"""An executable model of the Kubeflow Pipelines backend (2.14.0 to 2.17.0, with the Argo Workflows
they
deploy), applied to a compiled pipeline.yaml: every task and every input, by the backend's own rules
(pipeline/backend/rules.py names the file, function and line of each). No cluster is involved.

    report = check(IR.load("pipeline.yaml"), max_loop_items=MAX_NUM_SHARDS)
    report.findings  # what fails or misbehaves on a backend; [] for a pipeline that runs
    report.notes     # what the backend does with each task and input (docs/CLUSTER.md)
"""

import dataclasses

from pipeline.backend import rules
from pipeline.backend.ir import IR, Source, Task
from pipeline.backend.rules import Finding, Note, cache_key_inputs

__all__ = ["IR", "Source", "Task", "Finding", "Note", "Report", "check", "cache_key_inputs"]


@dataclasses.dataclass
class Report:
    findings: list
    notes: list

    def by_rule(self, rule: str) -> list:
        return [f for f in self.findings if f.rule == rule]


def check(ir: IR, max_loop_items: int, longest_attempt_s: dict | None = None) -> Report:
    """Every rule on every task. max_loop_items: the most items any ParallelFor iterates over (the
    pipeline's largest num_shards); longest_attempt_s: {display name or task key: longest run of one
    attempt, seconds} for
    retried tasks (rules.DEFAULT_LONGEST_ATTEMPT_S otherwise)."""
    findings, notes = [], []
    for rule in rules.RULES:
        if rule in (rules.collected_inputs, rules.executor_input_size):
            found, noted = rule(ir, max_loop_items)
        elif rule is rules.retries:
            found, noted = rule(ir, longest_attempt_s)
        else:
            found, noted = rule(ir)
        findings += found
        notes += noted
    return Report(findings, notes)
