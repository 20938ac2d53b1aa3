"""python -m pipeline compile | run | submit | demo: the pipeline's command line.

compile   write pipeline.yaml (the KFP IR a cluster runs), with images of the given tag
run       run the whole DAG here with kfp.local (the README's main command)
submit    create a run of pipeline.yaml on a Kubeflow Pipelines cluster
demo      serve the web demo (web/) with a .tflite on 127.0.0.1 and print its URL
"""

import argparse
import logging
import sys

from components.cli import PROJECT_PACKAGES, Parser


def missing_dependency(error: ModuleNotFoundError) -> str | None:
    """The one line for a dependency this interpreter lacks (a python3 outside .venv), else None."""
    name = (error.name or "").split(".")[0]
    if not name or name in PROJECT_PACKAGES:  # a module of ours missing is no dependency
        return None
    return (
        f"python -m pipeline: the project's dependencies are missing (no module named {name!r} in "
        f"{sys.executable}); run `python3 dev.py compile` (or run, submit), which builds .venv from "
        "the locks, or use .venv/bin/python -m pipeline"
    )


def main(argv=None) -> int:
    parser = Parser(
        prog="python -m pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compile_ = commands.add_parser("compile", help="write the compiled pipeline (pipeline.yaml)")
    compile_.add_argument(
        "--output", default=None, help="where to write it (default: pipeline.yaml at the repo root)"
    )
    compile_.add_argument(
        "--image-tag", default=None, help="tag of the pose-cpu / pose-gpu images (POSE_IMAGE_TAG)"
    )
    compile_.add_argument("--registry", default=None, help="image registry (POSE_IMAGE_REGISTRY)")

    run = commands.add_parser("run", help="run the whole DAG locally with kfp.local")
    run.add_argument(
        "--source",
        default=None,
        help="data source: synthetic://N[?seed=S], a path, https://, gs://, s3:// or minio:// "
        "(default synthetic://2000)",
    )
    run.add_argument(
        "--config", default=None, help="training config YAML (default experiments/local.yaml)"
    )
    run.add_argument("--runner", default="subprocess", choices=("subprocess", "docker"))
    run.add_argument(
        "--pipeline-root", default=None, help="folder for every artifact (default runs/)"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training config override (repeatable), e.g. --set max_steps=200",
    )
    run.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline argument (repeatable), e.g. --param num_shards=2",
    )
    run.add_argument(
        "--cache", action="store_true", help="reuse cached ingest/shard outputs of earlier runs"
    )
    run.add_argument("--verbose", action="store_true", help="also show kfp's executor-input dumps")

    submit = commands.add_parser("submit", help="create a run on a KFP cluster")
    submit.add_argument(
        "--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080"
    )
    submit.add_argument(
        "--experiment", default=None, help="experiment name (default pose-estimation)"
    )
    submit.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline argument (repeatable), e.g. --param source=gs://bucket/aic.zip",
    )
    submit.add_argument(
        "--pipeline-root", default=None, help="gs://… or minio://… (default: the cluster's)"
    )
    submit.add_argument("--package", default=None, help="compiled pipeline (default pipeline.yaml)")
    submit.add_argument("--run-name", default=None)
    submit.add_argument(
        "--namespace", default=None, help="Kubeflow profile namespace (multi-user clusters)"
    )
    submit.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step afresh, train included (default: cached steps reuse "
        "earlier runs' outputs when their inputs are unchanged; "
        'docs/CLUSTER.md, "Reruns")',
    )
    submit.add_argument(
        "--token",
        default=None,
        help="bearer token for the KFP API on multi-user Kubeflow (kfp.Client's existing_token), "
        "e.g. $(kubectl -n <namespace> create token default-editor "
        "--audience=pipelines.kubeflow.org)",
    )

    demo = commands.add_parser("demo", help="serve the web demo with a model on 127.0.0.1")
    demo.add_argument(
        "--model", required=True, help="a .tflite (with its .json beside it, or a seed release)"
    )
    demo.add_argument(
        "--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free one)"
    )
    demo.add_argument(
        "--pictures", default=None, help="a folder served at pictures/, for &image=pictures/NAME"
    )

    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ModuleNotFoundError as error:
        message = missing_dependency(error)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    from pipeline.compile import CompileError
    from pipeline.demo import DemoError
    from pipeline.local import LocalRunError
    from pipeline.params import ParameterError
    from pipeline.submit import SubmitError
    from pose.files import steplog

    steplog.setup()
    try:
        if args.command == "compile":
            from pipeline.compile import DEFAULT_OUTPUT, compile_pipeline

            path = compile_pipeline(
                args.output or DEFAULT_OUTPUT, image_tag=args.image_tag, registry=args.registry
            )
            print(path)
        elif args.command == "run":
            from google.protobuf import json_format

            from pipeline import local
            from pipeline.dag import pose_pipeline
            from pipeline.params import declared_parameters, parse_params

            declared = declared_parameters(json_format.MessageToDict(pose_pipeline.pipeline_spec))
            local.run_local(
                source=args.source,
                config=args.config,
                runner=args.runner,
                pipeline_root=args.pipeline_root or local.DEFAULT_PIPELINE_ROOT,
                overrides=args.overrides,
                params=parse_params(args.params, declared),
                cache=args.cache,
                verbose=args.verbose,
            )
        elif args.command == "demo":
            from pipeline import demo as web_demo

            web_demo.serve(args.model, port=args.port, pictures=args.pictures)
        else:
            from pipeline.submit import DEFAULT_EXPERIMENT, DEFAULT_PACKAGE
            from pipeline.submit import submit as submit_run

            result = submit_run(
                args.host,
                params=args.params,
                experiment=args.experiment or DEFAULT_EXPERIMENT,
                pipeline_root=args.pipeline_root,
                package=args.package or DEFAULT_PACKAGE,
                run_name=args.run_name,
                namespace=args.namespace,
                token=args.token,
                enable_caching=False if args.no_cache else None,
            )
            print(f"run {result['run_id']}: {result['url']}")
    except (CompileError, DemoError, LocalRunError, ParameterError, SubmitError) as error:
        logging.getLogger("pipeline").error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
