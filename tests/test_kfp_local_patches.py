"""pipeline/kfp_local_patches.py against kfp.local itself: a real ParallelFor, run by kfp.local's own
orchestrator in subprocesses."""

import builtins
import logging

from pipeline.kfp_local_patches import one_task_at_a_time


def test_parallel_for_tasks_run_one_at_a_time_and_leave_print_and_logging_as_found(tmp_path):
    from kfp import dsl, local

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def stay(seconds: float, log: str):
        import time

        started = time.time()
        time.sleep(seconds)
        with open(log, "a") as spans:
            spans.write(f"{started} {time.time()}\n")

    @dsl.pipeline
    def fan_out(log: str):
        # The shorter task usually starts first and ends first: without the patch, the order in which
        # kfp.local's two swaps of print and logging come undone wrongly.
        with dsl.ParallelFor([0.2, 1.5], parallelism=2) as seconds:
            stay(seconds=seconds, log=log)

    log = tmp_path / "spans.txt"
    root = logging.getLogger()
    before = builtins.print, root.handlers[:], root.level
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with one_task_at_a_time():
        fan_out(log=str(log))

    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 2
    assert spans[0][1] <= spans[1][0], f"the tasks overlapped: {spans}"
    assert (builtins.print, root.handlers, root.level) == before
