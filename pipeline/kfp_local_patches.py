"""Patches of kfp.local's internals, each undone when its context ends. Read against kfp 2.17.3
(requirements.lock).

- one_task_at_a_time: every in-process kfp.local run in this project (pipeline/local.py, and the tests
  that run parts of the DAG under kfp.local) runs its tasks and importers one at a time, so that the
  process-wide state kfp.local swaps per task comes back as it was.
"""

import contextlib
import functools
import threading


@contextlib.contextmanager
def one_task_at_a_time():
    """Runs kfp.local's tasks and importers one at a time, one lock for both.

    kfp.local runs a ParallelFor's iterations on threads (orchestrator/enhanced_dag_orchestrator.py,
    ParallelExecutor: two at a time), but each task swaps process-wide state in and back out without a
    lock: `builtins.print` (logging_utils.indented_print, in task_dispatcher.run_single_task_implementation)
    and the root logger's handlers and level (logging_utils.local_logger_context, there and in
    importer_handler.run_importer). Overlapping swaps are undone out of order: when the task that started
    first also ends first, the other one then "restores" the first one's indented print and its log
    handler (bound to the stdout of that moment), and both stay for the rest of the process. Every later
    print is indented twice, and pipeline/local.py's monitor once lost a failed step's last lines to it
    (tests/test_pipeline.py). Serial tasks still run each in its own process, on its own inputs.
    """
    from kfp.local import importer_handler, task_dispatcher

    lock = threading.Lock()

    def alone(run):
        @functools.wraps(run)
        def run_alone(*args, **kwargs):
            with lock:
                return run(*args, **kwargs)

        return run_alone

    run_task, run_importer = (
        task_dispatcher.run_single_task_implementation,
        importer_handler.run_importer,
    )
    task_dispatcher.run_single_task_implementation = alone(run_task)
    importer_handler.run_importer = alone(run_importer)
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = run_task
        importer_handler.run_importer = run_importer
