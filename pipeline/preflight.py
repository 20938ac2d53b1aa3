"""Every run parameter that can be checked without data, checked before the first task starts.

Issue 21: `batch_size: 0` in the `config` parameter was refused by train 460 s into a local run,
after download, convert and shard (hours at AIC scale), and `num_shards=0` / `100000` only once
convert or fanout ran. `check_arguments` applies each step's own check to the pipeline's arguments
(with the DAG's defaults for those not given): `python -m pipeline run` and `submit` call it before
starting anything, `compile` on the pipeline's defaults. A bad value is a ParameterError naming the
parameter.
"""

import inspect
import json

from pipeline.params import ParameterError


def default_arguments() -> dict:
    """{name: default} of the pipeline function's parameters (what a run gets for those not
    given)."""
    from pipeline.dag import pose_pipeline

    signature = inspect.signature(pose_pipeline.pipeline_func)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def check_arguments(
    arguments: dict, missing_config_ok: bool = False, paths_are_here: bool = False
) -> dict:
    """Checks `arguments` merged over the pipeline's defaults; returns the merged arguments.
    `missing_config_ok`: a config path not found here may exist only in the image (the docker
    runner). `paths_are_here`: a local-path `source` is read from this machine's disk, so it must
    exist here: true only for `pipeline run` with the subprocess runner, whose tasks are processes
    on this machine. Not for the docker runner (its tasks see the image's files, not this
    machine's), nor for submit: there a local path would name a path inside the pod's image, which
    this machine cannot look into (and cluster.refuse_local_paths refuses local storage paths on a
    cluster anyway)."""
    merged = {**default_arguments(), **arguments}
    for check in (
        _source,
        _num_shards,
        _keypoint_set,
        _training_config,
        _variants,
        _uris,
        _counts,
        _gpus,
        _node_selector,
        _s3_endpoint,
    ):
        check(merged, missing_config_ok)
    if paths_are_here:
        _source_exists(merged)
    return merged


def _fail(name: str, value, why: str):
    raise ParameterError(f"parameter {name}={value!r}: {why} (checked before any task started)")


def _source(arguments: dict, _) -> None:
    from components.download import DownloadError, synthetic_parameters

    source = str(arguments.get("source", "")).strip()
    if not source:
        _fail(
            "source",
            source,
            "empty; give synthetic://N, a path, https://, gs://, s3:// or minio://",
        )
    if source.lower().startswith("synthetic:"):
        try:
            synthetic_parameters(source)
        except DownloadError as error:
            _fail("source", source, str(error).removeprefix(f"{source}: "))
    sha256 = str(arguments.get("sha256", "")).strip()
    if sha256 and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        _fail("sha256", sha256, "expected 64 hex digits, or empty for no check")


def _num_shards(arguments: dict, _) -> None:
    from pose.data.packs import PackError, check_num_shards

    try:
        check_num_shards(arguments.get("num_shards"))
    except PackError as error:
        _fail("num_shards", arguments.get("num_shards"), str(error).split(": ", 1)[-1])


def _keypoint_set(arguments: dict, _) -> None:
    """keypoints: auto, a preset, or a YAML file (read and checked here when it is local; a remote
    one is checked for its form by _uris and read by convert); min_keypoints and valid_fraction in
    range; the seed's contract only for the aic set."""
    from pose.data import keypoint_files, keypoints
    from pose.models import contract

    spec = str(arguments.get("keypoints", keypoints.AUTO)).strip()
    chosen = None
    if not spec:
        _fail("keypoints", spec, "empty; give auto, a preset name or a YAML file")
    if spec != keypoints.AUTO and not keypoint_files.is_remote(spec):
        try:
            chosen = keypoints.load(spec)
        except keypoints.KeypointSetError as error:
            _fail("keypoints", spec, str(error))
    minimum = arguments.get("min_keypoints", 1)
    if (
        isinstance(minimum, bool)
        or not isinstance(minimum, int)
        or not 0 <= minimum <= keypoints.MAX_KEYPOINTS
    ):
        _fail(
            "min_keypoints", minimum, f"expected a whole number from 0 to {keypoints.MAX_KEYPOINTS}"
        )
    if chosen is not None and minimum > chosen.num_keypoints:
        _fail(
            "min_keypoints",
            minimum,
            f"the keypoint set {chosen.name!r} has only {chosen.num_keypoints} joints",
        )
    fraction = arguments.get("valid_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        _fail(
            "valid_fraction",
            fraction,
            "expected a number between 0 and 1 (the share of images held out)",
        )
    if (
        chosen is not None
        and arguments.get("export_contract") == contract.SEED
        and chosen.seed_order is None
    ):
        _fail(
            "export_contract",
            contract.SEED,
            f"the seed's contract is the seed's channel order of the aic keypoint set; keypoints="
            f"{spec} is {chosen.name!r}: use export_contract=aic or auto",
        )


def _training_config(arguments: dict, missing_config_ok: bool) -> None:
    from pose.training.config import ConfigError, load_config, parse_overrides

    config, overrides = arguments.get("config", ""), arguments.get("overrides", "")
    try:
        parsed = parse_overrides(overrides)
    except ConfigError as error:
        _fail("overrides", overrides, str(error))
    try:
        cfg = load_config(config, parsed)
    except ConfigError as error:
        if missing_config_ok and " not found (looked in " in str(error):
            return
        name = "overrides" if str(error).startswith("overrides") else "config"
        raise ParameterError(
            f"parameter {name}: {error} (checked before any task started)"
        ) from None
    if cfg.num_keypoints is None:
        return
    expected = _expected_keypoint_set(arguments)
    if expected is not None and cfg.num_keypoints != expected.num_keypoints:
        raise ParameterError(
            f"parameter config: num_keypoints {cfg.num_keypoints}, but the keypoint set "
            f"{expected.name!r} has {expected.num_keypoints} keypoints; leave num_keypoints out "
            "(train takes it from the data) (checked before any task started)"
        )


def _expected_keypoint_set(arguments: dict):
    """The set the run's shards will hold where it is known before any task: a preset or a local YAML
    file named by `keypoints`, or, with keypoints=auto, a synthetic source's layout. None otherwise
    (a remote YAML, real data whose set is read by convert)."""
    from components.download import DownloadError, synthetic_parameters
    from pose.data import keypoint_files, keypoints

    spec = str(arguments.get("keypoints", keypoints.AUTO)).strip()
    if spec != keypoints.AUTO:
        if keypoint_files.is_remote(spec):
            return None
        try:
            return keypoints.load(spec)
        except keypoints.KeypointSetError:
            return None  # _keypoint_set reports it
    source = str(arguments.get("source", ""))
    if not source.startswith("synthetic://"):
        return None
    try:
        _, _, layout = synthetic_parameters(source)
    except DownloadError:
        return None  # _source reports it
    return keypoints.preset(layout)


def _variants(arguments: dict, _) -> None:
    from components.tflite import VARIANTS
    from pose.models import contract

    text = str(arguments.get("tflite_variants", ""))
    variants = [v.strip() for v in text.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or len(set(variants)) != len(variants):
        _fail(
            "tflite_variants",
            text,
            f"expected distinct names from {', '.join(VARIANTS)}"
            + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else ""),
        )
    publish_variant = arguments.get("publish_variant")
    # "best" is publish's own choice among the variants made (components/publish.py, _choose_model)
    if (
        str(arguments.get("publish_uri", "")).strip()
        and publish_variant != "best"
        and publish_variant not in variants
    ):
        _fail("publish_variant", publish_variant, f"not among tflite_variants ({text}) nor 'best'")
    try:
        contract.check_choice(arguments.get("export_contract"))
    except contract.ContractError as error:
        _fail("export_contract", arguments.get("export_contract"), str(error))


def _uris(arguments: dict, _) -> None:
    """No '..', '.' or empty segments. Which schemes each parameter takes is
    pipeline/cluster.py's STORAGE_PARAMETERS, checked by check_storage_parameters before this."""
    from pose.data.keypoint_files import is_remote
    from pose.files.uris import UriError, check_uri

    for name in ("source", "publish_uri", "checkpoint_uri", "keypoints"):
        value = str(arguments.get(name, "")).strip()
        if not value or (name == "keypoints" and not is_remote(value)):
            continue
        try:
            check_uri(value, name)
        except UriError as error:
            raise ParameterError(f"parameter {error} (checked before any task started)") from None


def _counts(arguments: dict, _) -> None:
    value = arguments.get("latency_runs")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail("latency_runs", value, "expected a whole number >= 1")


def _gpus(arguments: dict, _) -> None:
    """gpu_count from 0 to the most a node has (cluster.MAX_GPUS_PER_NODE: more never schedules);
    a gpu_type to ask for when gpu_count > 0 (the accelerator's resource name)."""
    from pipeline.cluster import MAX_GPUS_PER_NODE

    count = arguments.get("gpu_count")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_GPUS_PER_NODE:
        _fail(
            "gpu_count",
            count,
            f"expected a whole number from 0 to {MAX_GPUS_PER_NODE} (MAX_GPUS_PER_NODE, the most "
            "GPUs one node has: a pod's GPUs all come from one node, so more is never scheduled)",
        )
    gpu_type = arguments.get("gpu_type")
    if count > 0 and (not isinstance(gpu_type, str) or not gpu_type.strip()):
        _fail(
            "gpu_type",
            gpu_type,
            f"empty while gpu_count={count}; give the accelerator's resource name, e.g. "
            "nvidia.com/gpu, or gpu_count=0",
        )


def _node_selector(arguments: dict, _) -> None:
    """gpu_node_selector maps label names to label values, both strings, as a pod's nodeSelector
    does (Kubernetes refuses a number, list, null or mapping there, and only when the pod is
    made)."""
    name = "gpu_node_selector"
    selector = arguments.get(name)
    if not isinstance(selector, dict):
        _fail(
            name, selector, 'expected a JSON object of label: value strings, e.g. {"pool": "gpu"}'
        )
    for key, value in selector.items():
        if not isinstance(key, str) or not key.strip():
            _fail(name, selector, f"the label name {key!r} is not a non-empty string")
        if not isinstance(value, str):
            _fail(
                name,
                selector,
                f"the value of {key!r} is {type(value).__name__} {json.dumps(value)}; a node "
                f'selector\'s values are strings (quote it: "{key}": "{value}")'
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                else f"the value of {key!r} is {json.dumps(value)}, not a string; a node "
                "selector's values are label strings",
            )


def _s3_endpoint(arguments: dict, _) -> None:
    """The endpoint's form by the steps' own parser (cluster.s3_settings, which the
    cluster-settings task calls): checked here too because a local run never calls it, and a bad
    endpoint would end a run that uses no S3 with rc 0 and the parameter ignored."""
    from pipeline.cluster import ClusterContractError, s3_settings

    endpoint = arguments.get("s3_endpoint", "")
    if not isinstance(endpoint, str):
        _fail("s3_endpoint", endpoint, "expected a string: host, host:port or http(s)://host:port")
    try:
        s3_settings(endpoint, "", True, arguments.get("s3_tls") is True)
    except ClusterContractError as error:
        raise ParameterError(f"parameter {error} (checked before any task started)") from None


def _source_exists(arguments: dict) -> None:
    """A local-path source (not synthetic://, not a URI) names a file or folder on this machine."""
    from pose.files.uris import local_path

    source = str(arguments.get("source", "")).strip()
    path = local_path(source)
    if path is not None and not path.exists():
        _fail(
            "source",
            source,
            f"no such file or folder here ({path.absolute()}); a local source is read from this "
            "machine's disk: give an existing path, or gs://, s3://, minio://, https:// or "
            "synthetic://N",
        )
