"""Reliability round 3 (docs/RELIABILITY.md, "Reliability round 3: parameters"): every
parameter's form is checked before any task starts, in `pipeline run` and `submit` alike, and a
bad one is refused in one line naming the parameter, the value and what is expected. One case per
finding of the hostile-input walk; each goes through the real preflight.check_arguments, the real
run_local (up to its refusal, with kfp.local never started) and the real submit (against a port
nobody listens on)."""

import json
import socket

import pytest

from pipeline.params import ParameterError

# (arguments as pipeline parameters, what the refusal says)
_BAD_FORMS = [
    ({"source": "https://"}, r"source='https://': no host; expected a URI with a host"),
    ({"source": "https:///x"}, r"source='https:///x': no host; expected a URI with a host"),
    ({"source": "gs://"}, r"source='gs://': no bucket; expected a URI with a bucket"),
    ({"source": "s3://"}, r"source='s3://': no bucket; expected a URI with a bucket"),
    (
        {"s3_endpoint": "host:abc"},
        r"s3_endpoint='host:abc': the port 'abc' is not a number from 1 to 65535; expected host",
    ),
    ({"s3_endpoint": "host:99999"}, r"s3_endpoint='host:99999': the port '99999' is not a number"),
    ({"s3_endpoint": "host:0"}, r"s3_endpoint='host:0': the port 0 is not from 1 to 65535"),
    (
        {"s3_endpoint": "http://host:9000/path"},
        r"s3_endpoint='http://host:9000/path': a path after the host",
    ),
    ({"s3_endpoint": ":9000"}, r"s3_endpoint=':9000': no host; expected host, host:port"),
    (
        {"gpu_node_selector": {"pool": 8}},
        r"gpu_node_selector=.*: the value of 'pool' is int 8; a node selector's values are strings",
    ),
    (
        {"gpu_node_selector": {"pool": ["a"]}},
        r"gpu_node_selector=.*: the value of 'pool' is \[\"a\"\], not a string",
    ),
    (
        {"gpu_node_selector": {"pool": None}},
        r"gpu_node_selector=.*: the value of 'pool' is null, not a string",
    ),
    (
        {"gpu_node_selector": {"pool": {"a": "b"}}},
        r"gpu_node_selector=.*: the value of 'pool' is \{\"a\": \"b\"\}, not a string",
    ),
    ({"gpu_count": 17}, r"gpu_count=17: expected a whole number from 0 to 16 \(MAX_GPUS_PER_NODE"),
    ({"gpu_count": -1}, r"gpu_count=-1: expected a whole number from 0 to 16"),
    ({"gpu_type": "", "gpu_count": 1}, r"gpu_type='': empty while gpu_count=1"),
    ({"gpu_type": "  ", "gpu_count": 2}, r"gpu_type='  ': empty while gpu_count=2"),
    (
        {"config": "batch_size: [1"},
        r"parameter config: config text: not valid YAML: line 1, column 15: "
        r"expected ',' or '\]', but got '<stream end>' \(while parsing a flow sequence from line 1, "
        r"column 13\) \(checked before any task started\)$",
    ),
    (
        {"overrides": "batch_size=[1"},
        r"parameter overrides='batch_size=\[1': overrides: the value of 'batch_size' is not valid "
        r"YAML: line 1, column 3: expected ',' or '\]'",
    ),
]
_BAD_IDS = [
    "https-no-host",
    "https-empty-host",
    "gs-no-bucket",
    "s3-no-bucket",
    "endpoint-port-abc",
    "endpoint-port-99999",
    "endpoint-port-0",
    "endpoint-path",
    "endpoint-no-host",
    "selector-number",
    "selector-list",
    "selector-null",
    "selector-mapping",
    "gpu_count-17",
    "gpu_count-negative",
    "gpu_type-empty",
    "gpu_type-blank",
    "config-yaml",
    "overrides-yaml",
]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("arguments, message", _BAD_FORMS, ids=_BAD_IDS)
def test_preflight_refuses_a_bad_form_in_one_line(arguments, message):
    from pipeline.preflight import check_arguments

    with pytest.raises(ParameterError, match=message) as refused:
        check_arguments(arguments)
    text = str(refused.value)
    assert "\n" not in text and text.startswith("parameter ")
    assert text.endswith("(checked before any task started)")


@pytest.mark.parametrize("arguments, message", _BAD_FORMS, ids=_BAD_IDS)
def test_pipeline_run_refuses_a_bad_form_before_the_first_task(
    tmp_path, monkeypatch, arguments, message
):
    from kfp import local

    from pipeline.local import LocalRunError, run_local

    def no_run(*args, **kwargs):
        raise AssertionError("the run would start")

    monkeypatch.setattr(local, "init", no_run)
    params = dict(arguments)
    source = params.pop("source", None)
    with pytest.raises(LocalRunError, match=message):
        run_local(
            source=source,
            config="experiments/tiny.yaml",
            pipeline_root=str(tmp_path / "runs"),
            params=params,
        )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arguments, message", _BAD_FORMS, ids=_BAD_IDS)
def test_submit_refuses_a_bad_form_before_contacting_the_cluster(arguments, message):
    from pipeline.submit import SubmitError, submit

    pairs = [
        f"{name}={json.dumps(value) if isinstance(value, (dict, list)) else value}"
        for name, value in arguments.items()
    ]
    # refused by the storage check or by preflight, before kfp.Client is made
    with pytest.raises((SubmitError, ParameterError), match=message) as refused:
        submit(f"http://127.0.0.1:{_closed_port()}", params=pairs)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "endpoint, tls, url",
    [
        ("host", False, "http://host"),
        ("host:9000", True, "https://host:9000"),
        ("http://host", False, "http://host"),
        ("https://host:8443", False, "https://host:8443"),
        ("https://host/", True, "https://host"),
        ("[::1]:9000", False, "http://[::1]:9000"),
        ("", False, ""),
    ],
)
def test_the_endpoint_forms_taken_and_the_url_the_steps_get(endpoint, tls, url):
    from pipeline.cluster import s3_settings
    from pipeline.preflight import check_arguments

    check_arguments({"s3_endpoint": endpoint, "s3_tls": tls})
    assert json.loads(s3_settings(endpoint, "", True, tls))["endpoint_url"] == url


def test_good_selectors_and_gpus_pass():
    from pipeline.preflight import check_arguments

    check_arguments({"gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}})
    check_arguments({"gpu_count": 16})
    check_arguments({"gpu_count": 0, "gpu_type": ""})  # no GPU asked for: no type needed


def test_a_missing_local_source_is_refused_only_where_it_is_read_from_this_machine(
    tmp_path, monkeypatch
):
    """`pipeline run` (subprocess runner) reads a local source from this machine's disk: a path
    that is not there is refused before any task. For the docker runner and submit a local path
    names a path in the image or pod, which this machine cannot look into, so check_arguments
    (as they call it) does not look."""
    from kfp import local

    from pipeline.local import LocalRunError, run_local
    from pipeline.preflight import check_arguments

    missing = tmp_path / "no-such-release.zip"
    message = rf"parameter source='{missing}': no such file or folder here"
    with pytest.raises(ParameterError, match=message):
        check_arguments({"source": str(missing)}, paths_are_here=True)
    check_arguments({"source": str(missing)})  # submit's and the docker runner's call
    (tmp_path / "release").mkdir()
    check_arguments({"source": str(tmp_path / "release")}, paths_are_here=True)

    def no_run(*args, **kwargs):
        raise AssertionError("the run would start")

    monkeypatch.setattr(local, "init", no_run)
    with pytest.raises(LocalRunError, match=message):
        run_local(
            source=str(missing),
            config="experiments/tiny.yaml",
            pipeline_root=str(tmp_path / "runs"),
        )
    assert not (tmp_path / "runs").exists()
