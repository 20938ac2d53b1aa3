"""Runs the whole pipeline on this machine with kfp.local: the README's main command.

Takes    a data source (`synthetic://N` by default), a training config file, pipeline arguments, and the
         runner: `subprocess` (each task a Python subprocess in this environment) or `docker` (each task in
         the project's images, built from images/).
Does     runs the same pipeline function that is compiled to pipeline.yaml: kfp 2.17's local orchestrator
         runs its ParallelFor, dsl.Collected and dsl.If as a cluster would, and ignores what only a cluster
         has (resource requests, accelerators, node selectors, tolerations, secrets). Task output streams
         through, less kfp's dump of every executor input; a failed step stops the run, and its last
         lines are repeated at the end.
Writes   every artifact under `<pipeline root>/<pipeline name>-<timestamp>/<task>/`, and `summary.json` there:
         where the models, metrics and report are, the headline figures, and wall time per step.
"""

import collections
import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

from pipeline import kfp_local_patches, preflight
from pipeline.params import ParameterError
from pose.evaluation import results as results_schema
from pose.files.atomic import atomic_file

log = logging.getLogger("pipeline.local")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PIPELINE_ROOT = "runs"
RUNNERS = ("subprocess", "docker")
FAILURE_TAIL_LINES = 40
DOCKER_SHM_SIZE = "1g"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_QUIET_EXECUTOR_LINES = ("Looking for component `", "Loading KFP component ")


class LocalRunError(RuntimeError):
    """The local run could not start, or one of its steps failed."""


def run_local(
    source: str | None = None,
    config: str | None = None,
    runner: str = "subprocess",
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    overrides: list[str] = (),
    params: dict | None = None,
    cache: bool = False,
    verbose: bool = False,
) -> dict:
    """Runs the pipeline under kfp.local and returns (and writes as summary.json) the run's summary.

    `source` and `config` default to the pipeline's own (pipeline.dag.DEFAULT_SOURCE, DEFAULT_CONFIG).
    `config` is a YAML file (see _config_argument for how it reaches train). `overrides` are training
    config `key=value` pairs; `params` any other pipeline arguments.
    """
    from kfp import local

    from pipeline.dag import DEFAULT_CONFIG, DEFAULT_SOURCE, pose_pipeline

    source, config = source or DEFAULT_SOURCE, config or DEFAULT_CONFIG
    arguments = {
        "source": source,
        "config": _config_argument(config, runner),
        "overrides": ",".join(overrides),
        **(params or {}),
    }
    if "allow_cpu" not in arguments:
        # On a cluster train fails when its pod got GPUs TensorFlow cannot see; here "no GPU" is the usual case.
        arguments["allow_cpu"] = True
        log.info(
            "allow_cpu=true for this local run: train uses a GPU if TensorFlow sees one, else the CPU "
            "(--param allow_cpu=false to insist on a GPU)"
        )
    # The parameters' form first: a malformed URI is the user's to fix whatever this machine holds.
    try:
        preflight.check_arguments(
            arguments,
            missing_config_ok=runner == "docker",
            paths_are_here=runner == "subprocess",  # a docker task sees the image's files
        )
    except ParameterError as error:
        raise LocalRunError(str(error)) from None
    _check_storage(pose_pipeline, arguments)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=_runner(runner),
        pipeline_root=str(root),
        enable_caching=cache,
        cache_root=str(root / ".kfp_cache") if cache else None,
    )
    log.info(
        "running %s locally (%s runner) under %s; cluster-only settings are ignored here",
        pose_pipeline.name,
        runner,
        root,
    )

    display_names = _display_names(pose_pipeline.pipeline_spec)
    stream = _RunMonitor(sys.stdout, verbose)
    started = time.perf_counter()
    try:
        docker_tasks = (
            kfp_local_patches.docker_tasks(_local_docker_images())
            if runner == "docker"
            else contextlib.nullcontext()
        )
        # timing_tasks inside one_task_at_a_time's lock: a task's time excludes its wait for the lock
        with (
            _quiet_local_warnings(),
            docker_tasks,
            stream.timing_tasks(),
            kfp_local_patches.one_task_at_a_time(),
            contextlib.redirect_stdout(stream),
        ):
            outputs = pose_pipeline(**arguments).outputs
    except RuntimeError as error:
        stream.flush()
        _print_step_times(stream.step_times(display_names), time.perf_counter() - started)
        failed = stream.failed_task
        if failed is None:
            raise LocalRunError(f"local run failed: {_ANSI.sub('', str(error))}") from error
        name = display_names.get(failed, failed)
        print(f"\n---- last lines of the failed step {name!r} ----", file=sys.stderr)
        print(
            "\n".join(stream.tail(failed)) or "(none captured: see the step's output above)",
            file=sys.stderr,
        )
        raise LocalRunError(
            f"step {name!r} failed (its output is above); pipeline root {root}"
        ) from None
    stream.flush()
    seconds = time.perf_counter() - started

    summary = _summarise(outputs, stream.step_times(display_names), seconds)
    with atomic_file(Path(summary["run_dir"], "summary.json")) as written:
        written.write_text(json.dumps(summary, indent=2))
    _print_summary(summary)
    return summary


def _check_storage(pipeline, arguments: dict) -> None:
    """Before any task: every storage parameter has a scheme it takes, and this machine has
    credentials for its store (pipeline/cluster.py check_storage_parameters), so that a run does not
    train for an hour and then fail at publish."""
    from google.protobuf import json_format

    from pipeline.cluster import ClusterContractError, check_storage_parameters
    from pipeline.params import declared_defaults

    effective = {
        **declared_defaults(json_format.MessageToDict(pipeline.pipeline_spec)),
        **arguments,
    }
    try:
        check_storage_parameters(effective, "checked before the local run", on_cluster=False)
    except ClusterContractError as error:
        raise LocalRunError(str(error)) from None


def _config_argument(config: str, runner: str) -> str:
    """A file inside the repository goes as its repository-relative path, which train also finds in the
    images (they hold the repository); any other file goes as its YAML text."""
    path = Path(config) if Path(config).is_file() else REPO / config
    if path.is_file():
        try:
            return path.resolve().relative_to(REPO).as_posix()
        except ValueError:
            return path.read_text()
    if runner == "docker":  # a path that only the image has
        return config
    raise LocalRunError(
        f"config {config!r}: no such file (give a YAML file, e.g. experiments/local.yaml)"
    )


def _runner(name: str):
    from kfp import local

    if name == "subprocess":
        # use_venv=False: the tasks run in this environment, which already holds every step's dependencies.
        return local.SubprocessRunner(use_venv=False)
    if name == "docker":
        _check_docker_images()
        # Host network: a bare engine (scripts/docker_engine.py) has no bridge, and a local fake-gcs-server or
        # proxy is reachable as on the host. The invoking user's uid, so that the pipeline root's files stay
        # theirs. Shared memory as `docker run --shm-size` gives training in README.md.
        return local.DockerRunner(
            network_mode="host", user=f"{os.getuid()}:{os.getgid()}", shm_size=DOCKER_SHM_SIZE
        )
    raise LocalRunError(f"--runner {name!r}: expected one of {', '.join(RUNNERS)}")


def _local_docker_images() -> dict:
    """The image each kind of task runs in locally: the pipeline's, except that train runs in pose-cpu, since
    kfp.local gives containers no GPU (pose-gpu's TensorFlow would run on the CPU as well, from a far bigger image)."""
    from pipeline import images

    return {
        images.SLIM_IMAGE: images.SLIM_IMAGE,
        images.CPU_IMAGE: images.CPU_IMAGE,
        images.GPU_IMAGE: images.CPU_IMAGE,
    }


def _check_docker_images() -> None:
    """An engine answers and holds the images the run needs; else an error that says how to get them."""
    try:
        import docker
    except ImportError as error:
        raise LocalRunError(
            "--runner docker needs the docker SDK (requirements-dev.lock; `python3 dev.py test` "
            "installs it)"
        ) from error
    try:
        client = docker.from_env()
        client.ping()
    except (
        docker.errors.DockerException,
        OSError,
    ) as error:  # requests' ConnectionError is an OSError
        raise LocalRunError(
            f"--runner docker: no docker engine answers ({error}); `python3 scripts/docker_engine.py "
            f"up` installs and starts one and prints the DOCKER_HOST to export"
        ) from error
    with contextlib.closing(client):
        missing = []
        for image in sorted(set(_local_docker_images().values())):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                missing.append(image)
    if missing:
        kinds = " ".join(
            name.rsplit("/", 1)[-1].split(":")[0].removeprefix("pose-") for name in missing
        )
        raise LocalRunError(
            f"--runner docker: image {', '.join(missing)} is not built; build it with "
            f"`python3 scripts/build_images.py {kinds}` (add --base-image "
            f"pose-stand-in/python:3.11-bookworm where no registry is reachable)"
        )


@contextlib.contextmanager
def _quiet_local_warnings():
    """kfp.local warns per task that cluster settings are ignored and that our images' names lack
    'python'; both are expected here, and said once at the start instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Task '.*': settings \[")
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task")
        yield


def _display_names(pipeline_spec) -> dict:
    """kfp.local logs tasks by component name (`shard-op-2`); the DAG names them (`shard-valid`)."""
    names = {}
    for component in [pipeline_spec.root, *pipeline_spec.components.values()]:
        for task in component.dag.tasks.values():
            names[task.component_ref.name.removeprefix("comp-")] = task.task_info.name
    return names


class _RunMonitor(io.TextIOBase):
    """Stands in for stdout during the run and times every task (run one at a time: see
    kfp_local_patches.one_task_at_a_time). Lines pass through with one buffer per thread, less the
    executor-input dumps; each task's lines are kept for its tail.

    It reads print's indentation from each task's output instead of assuming kfp's four spaces: a process
    that ran kfp.local before (a notebook, an earlier test) may have been left with an indented print,
    and then every line comes indented twice.
    """

    def __init__(self, out, verbose: bool):
        self.out, self.verbose = out, verbose
        self.lock = threading.Lock()
        self.local = threading.local()
        self.spans = collections.defaultdict(list)
        self.tails = collections.defaultdict(lambda: collections.deque(maxlen=FAILURE_TAIL_LINES))
        self.failed_task = None

    def timing_tasks(self):
        """Times every task."""
        from kfp.local import status

        def timing(run_task):
            def timed(*args, **kwargs):
                task = kwargs["component_name"].removeprefix("comp-")
                self.local.task, self.local.dump_end = task, None
                started = time.perf_counter()
                try:
                    outputs, task_status = run_task(*args, **kwargs)
                finally:
                    self.flush()
                    self.local.task = None
                with self.lock:
                    self.spans[task].append((started, time.perf_counter()))
                    if task_status != status.Status.SUCCESS:
                        self.failed_task = task
                return outputs, task_status

            return timed

        return kfp_local_patches.around_each_task(timing)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        buffer = getattr(self.local, "buffer", "") + text
        *lines, self.local.buffer = buffer.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self):
        if getattr(self.local, "buffer", ""):
            self._line(self.local.buffer)
            self.local.buffer = ""
        self.out.flush()

    def _line(self, line: str):
        plain = _ANSI.sub("", line)
        if self._in_executor_input_dump(plain) and not self.verbose:
            return
        if not self.verbose and any(marker in plain for marker in _QUIET_EXECUTOR_LINES):
            return
        task = getattr(self.local, "task", None)
        with self.lock:
            # Every line printed while a task runs is its own: print indents the step's output, but kfp's
            # own lines about the task, and output whose print was not indented, belong to it too.
            if task and plain.strip():
                self.tails[task].append(plain.removeprefix(getattr(self.local, "indent", "    ")))
            self.out.write(line + "\n")

    def _in_executor_input_dump(self, plain: str) -> bool:
        """Whether the line belongs to kfp's dump of a task's executor input: "Got executor_input:", then
        json.dumps(indent=4) as print indents it, "{" first and "}" at the same indentation last. That
        indentation is print's (kfp's four spaces, or more where an earlier run left print indented),
        kept as the task's own to take off its lines. A line that does not fit ends the dump, so that no
        output is lost to a dump that was not one."""
        dump_end = getattr(self.local, "dump_end", None)
        if dump_end == "" and plain.rstrip().endswith("{"):
            self.local.indent = plain[: len(plain) - len(plain.lstrip())]
            self.local.dump_end = self.local.indent + "}"
            return True
        if dump_end:
            if plain.rstrip() == dump_end:
                self.local.dump_end = None
            return True
        self.local.dump_end = "" if plain.endswith("Got executor_input:") else None
        return self.local.dump_end == ""

    def tail(self, task: str) -> list[str]:
        return list(self.tails[task])

    def step_times(self, display_names: dict) -> list[dict]:
        """Per step, in the order steps started: task count, wall time (first start to last end), task time."""
        steps = {}
        for task, spans in sorted(self.spans.items(), key=lambda item: min(s for s, _ in item[1])):
            steps.setdefault(display_names.get(task, task), []).extend(spans)
        return [
            {
                "step": step,
                "tasks": len(spans),
                "task_s": round(sum(e - s for s, e in spans), 1),
                "wall_s": round(max(e for _, e in spans) - min(s for s, _ in spans), 1),
            }
            for step, spans in steps.items()
        ]


def _summarise(outputs: dict, steps: list[dict], seconds: float) -> dict:
    paths = {name: Path(artifact.path) for name, artifact in outputs.items()}
    results_file = paths["results"] / results_schema.FILE_NAME
    if not results_file.is_file():
        raise LocalRunError(f"the run finished but evaluate wrote no {results_file}")
    return {
        "run_dir": str(paths["metrics"].parent.parent),
        "seconds": round(seconds, 1),
        "models": sorted(str(p) for p in paths["tflite_models"].glob("*.tflite")),
        "outputs": {name: str(path) for name, path in paths.items()},
        # the same page as the HTML artifact, but named .html so that a browser opens it as a page
        "report": str(
            paths["results"] / "report.html"
            if (paths["results"] / "report.html").is_file()
            else paths["report"]
        ),
        "results": str(results_file),
        "metrics": dict(outputs["metrics"].metadata),
        "headline": headline_figures(results_schema.read(results_file)),
        "steps": steps,
    }


def headline_figures(results: "results_schema.Results") -> dict:
    """What a run is judged by, from evaluate's results.json: per model the set's PCK (`pck_name`), OKS
    AP, latency at one thread (and its ratio to the seed's model of the same family, timed in the same
    run), size and the agreement with the seed's CPM on the real photographs; every anchor's own
    figures (the seed's models and BlazePose, each with its source)."""
    photos = results.get("photos") or {}
    models = {
        name: {
            "pckh": model["pckh"],
            "ap": model["ap"],
            "latency_ms": model["latency"]["1"]["median_ms"],
            "latency_vs_seed": (model.get("vs_seed") or {}).get("latency_1_thread"),
            "input_size": (model.get("metadata") or {}).get("input_size"),
            "seed_input_size": (model.get("vs_seed") or {}).get("seed_input_size"),
            "size_mb": model["size_bytes"] / 1e6,
            "photo_agreement": (photos.get("agreement") or {}).get(name),
            "photo_agreement_found": (photos.get("agreement_found") or {}).get(name),
        }
        for name, model in sorted(results["models"].items())
    }
    seed = {
        name: {
            "pckh": anchor.get("pckh"),
            "ap": anchor.get("ap"),
            "latency_ms": anchor["latency"]["1"]["median_ms"],
            "size_mb": anchor["size_bytes"] / 1e6,
            "input_size": (anchor.get("metadata") or {}).get("input_size"),
            "source": results_schema.anchor_source(anchor),
        }
        for name, anchor in sorted(results.get("anchors", {}).items())
    }
    return {
        "people": results.get("settings", {}).get("num_people"),
        "pck_name": results.get("settings", {}).get("pck_name", "PCKh@0.5"),
        "models": models,
        "seed": seed,
        "photos": len(photos.get("pictures") or []),
    }


def _print_step_times(steps: list[dict], seconds: float) -> None:
    if not steps:
        return
    width = max(len(s["step"]) for s in steps) + 2
    print(f"\n{'step':<{width}}{'tasks':>5}{'wall s':>10}{'task s':>10}")
    for s in steps:
        print(f"{s['step']:<{width}}{s['tasks']:>5}{s['wall_s']:>10.1f}{s['task_s']:>10.1f}")
    print(f"{'whole run':<{width}}{'':>5}{seconds:>10.1f}")


def _print_summary(summary: dict) -> None:
    _print_step_times(summary["steps"], summary["seconds"])
    print(f"\nrun folder  {summary['run_dir']}")
    print(
        "models      "
        + ("\n            ".join(summary["models"]) or summary["outputs"]["tflite_models"])
    )
    print(f"metrics     {summary['outputs']['metrics']}")
    print(f"report      {summary['report']}")
    print(f"results     {summary['results']}")
    print(f"summary     {Path(summary['run_dir'], 'summary.json')}")
    headline = summary["headline"]
    if headline["models"]:
        print(
            f"\nheadline figures, valid split ({headline['people']} people; latency: LiteRT, 1 thread, this CPU)"
        )
        seed_rows = {f"{m.get('source', 'seed')} {name}": m for name, m in headline["seed"].items()}
        width = max(24, *(len(name) + 2 for name in [*headline["models"], *seed_rows]))
        print(
            f"{'model':<{width}}{headline.get('pck_name', 'PCKh@0.5'):>9}{'OKS AP':>8}{'ms':>9}"
            f"{'vs seed':>9}{'MB':>7}{'photos':>10}"
        )
        unlike = set()
        for name, m in headline["models"].items():
            ratio = f"x{m['latency_vs_seed']:.2f}" if m["latency_vs_seed"] else "n/a"
            if m["latency_vs_seed"] and m.get("seed_input_size") not in (None, m.get("input_size")):
                ratio += "*"
                unlike.add((m.get("input_size"), m["seed_input_size"]))
            agreement = (
                f"{m['photo_agreement']:>5.2f}/{m['photo_agreement_found']:.2f}"
                if m.get("photo_agreement") is not None
                else f"{'':>10}"
            )
            print(
                f"{name:<{width}}{100 * m['pckh']:>9.1f}{m['ap']:>8.3f}{m['latency_ms']:>9.2f}{ratio:>9}"
                f"{m['size_mb']:>7.2f}"
                f"{agreement}"
            )
        for name, m in seed_rows.items():
            pckh = f"{100 * m['pckh']:>9.1f}" if m.get("pckh") is not None else f"{'':>9}"
            ap = f"{m['ap']:>8.3f}" if m.get("ap") is not None else f"{'':>8}"
            source = m.get("source", "seed")  # a summary.json of before outside anchors: the seed's
            ratio = "x1.00" if source == "seed" else "n/a"  # ratios are against the seed's only
            print(f"{name:<{width}}{pckh}{ap}{m['latency_ms']:>9.2f}{ratio:>9}{m['size_mb']:>7.2f}")
        if headline.get("photos"):
            print(
                f"photos: agreement with the seed's CPM on {headline['photos']} real photographs, PCK@0.2 of the "
                "person's size over the joints both name / over the joints the seed finds (see the report)"
            )
        for ours, theirs in sorted(unlike):
            print(
                f"* not like with like: our model takes {ours} px, the seed's {theirs} px; latency grows with "
                f"the pixels, so this ratio is not a speed-up at equal input size"
            )
