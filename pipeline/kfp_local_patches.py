"""The patches of kfp.local's internals that a local run (pipeline/local.py) applies, each for
the length of one run and undone after it. Read against kfp 2.17.3 (requirements.lock): its
per-task entry point `kfp.local.task_dispatcher.run_single_task_implementation`, and the docker
runner's `kfp.local.docker_task_handler.run_docker_container`.

- around_each_task: wraps the per-task entry point (the run's monitor times the tasks).
- one_task_at_a_time: tasks and importers run one at a time, so that the process-wide state
  kfp.local swaps per task comes back as it was; every in-process kfp.local run in this project
  uses it (the local run, and the tests that run parts of the DAG under kfp.local).
- docker_tasks: each task in the image the run picks (train in pose-cpu: kfp.local gives
  containers no GPU), its container run by run_docker_container, which reads a failure as one
  and passes the storage settings of this machine's environment on (STORAGE_ENV).
"""

import contextlib
import functools
import os
import threading

# What the steps read their bucket settings and credentials from (pose/files/storage_gcs.py,
# storage_s3.py, storage.py). kfp.local gives a container only the task's own variables, so a
# `pipeline run --runner docker` with gs:// or s3:// URIs would reach no store without these.
STORAGE_ENV = (
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "POSE_S3_PATH_STYLE",
    "POSE_NETWORK_TIMEOUT",
    "POSE_NETWORK_RETRY",
    "POSE_HTTP_RETRIES",
)


@contextlib.contextmanager
def around_each_task(wrap):
    """Runs every task through `wrap(run_task)`, a function with run_task's signature, which returns
    (outputs, status) and receives the task's name as the keyword `component_name`."""
    from kfp.local import task_dispatcher

    run_task = task_dispatcher.run_single_task_implementation
    task_dispatcher.run_single_task_implementation = wrap(run_task)
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = run_task


@contextlib.contextmanager
def one_task_at_a_time():
    """Runs kfp.local's tasks and importers one at a time, one lock for both.

    kfp.local runs a ParallelFor's iterations on threads (orchestrator/enhanced_dag_orchestrator.py,
    ParallelExecutor: two at a time), but each task swaps process-wide state in and back out
    without a lock: `builtins.print` (logging_utils.indented_print, in
    task_dispatcher.run_single_task_implementation) and the root logger's handlers and level
    (logging_utils.local_logger_context, there and in importer_handler.run_importer). Overlapping
    swaps are undone out of order: when the task that started first also ends first, the other one
    then "restores" the first one's indented print and its log handler (bound to the stdout of that
    moment), and both stay for the rest of the process. Every later print is indented twice, and
    pipeline/local.py's monitor once lost a failed step's last lines to it (tests/test_pipeline.py).
    Serial tasks still run each in its own process, on its own inputs.
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


@contextlib.contextmanager
def docker_tasks(images: dict):
    """Runs each task's container with run_docker_container, in `images[its image]` (its own
    image when `images` does not name it)."""
    from kfp.local import docker_task_handler

    def in_local_images(run_task):
        def in_local_image(*args, **kwargs):
            executor_spec = type(kwargs["executor_spec"])()
            executor_spec.CopyFrom(kwargs["executor_spec"])
            image = executor_spec.container.image
            executor_spec.container.image = images.get(image, image)
            return run_task(*args, **{**kwargs, "executor_spec": executor_spec})

        return in_local_image

    run_container = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_docker_container
    try:
        with around_each_task(in_local_images):
            yield
    finally:
        docker_task_handler.run_docker_container = run_container


def run_docker_container(
    client, image: str, command: list[str], volumes: dict, **container_run_args
) -> int:
    """kfp.local's run_docker_container without its false success: kfp 2.17.3 starts the container
    with auto_remove=True, and when the container has exited and been removed before kfp reads its
    logs and exit status (a step that fails within moments, on a busy machine), it takes the missing
    container for exit status 0, so the failed task passes and the next one fails on a missing
    input. Here the container stays until its exit status has been read, and then goes."""
    passed_on = {name: os.environ[name] for name in STORAGE_ENV if os.environ.get(name)}
    task_env = container_run_args.get("environment") or {}
    container_run_args["environment"] = {**passed_on, **task_env}
    container = client.containers.run(
        image=image, command=command, volumes=volumes, detach=True, **container_run_args
    )
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode(errors="replace"), end="")
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)
