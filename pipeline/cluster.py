"""What a run on a Kubeflow Pipelines cluster needs that a kfp.local run does not: the one owner of the
cluster contract's run-time rules (README "On a cluster").

Used before submission (pipeline/submit.py) and inside the pods (the bodies in pipeline/ops.py, in every
image), so at import it needs nothing beyond the standard library and pose/files/uris.py (the local-path
rule); check_storage_parameters, which runs before submission and before local runs, asks
pose/files/storage.py which schemes exist and where credentials would come from.

- Every step runs in its own pod, whose disk is empty and thrown away: a local path given as `source`,
  `publish_uri` or `checkpoint_uri` names nothing the pod can read, and whatever is written there is lost.
- The KFP driver reads a resource placeholder (accelerator count) and a secret name as *strings*:
  kubeflow/pipelines backend/src/v2/driver/resolve.go, resolvePodSpecInputRuntimeParameter, returns
  `val.GetStringValue()`, which is "" for a number; driver.go then sets no accelerator limit. And
  k8s.go resolves a secret name with resolveInputParameterStr, which fails the task on "". The
  `cluster-settings` task (pipeline/ops.py) turns the run parameters into such strings.
"""

import os
import re

from pose.files.uris import UriError, is_local, parse_endpoint

# Set on every container of a KFP v2 pod by the backend's Argo compiler (kubeflow/pipelines
# backend/src/v2/compiler/argocompiler/common.go, commonEnvs: KFP_POD_NAME and KFP_POD_UID from the
# pod's metadata); kfp.local's subprocess and docker runners set neither.
KFP_POD_ENV = "KFP_POD_NAME"

GCS_SECRET_MOUNT = "/var/secrets/gcs"
GCS_KEY_FILE = "key.json"
# The secret volume mounted when `gcs_secret` is "": the driver refuses an empty secret name (k8s.go,
# resolveInputParameterStr "Expected a non-empty string"), so "" becomes this name, which nobody creates;
# the volume is optional, so the kubelet mounts an empty folder and the pod starts.
NO_GCS_SECRET = "pose-pipeline-no-gcs-secret"

# S3 credentials, KFP's way: a secret with the keys of KFP's own `mlpipeline-minio-artifact`
# (kubeflow/pipelines 2.17.0 backend/src/v2/config/env.go: minioArtifactSecretName, accessKeyKey
# "accesskey", secretKeyKey "secretkey"), mounted like the GCS secret, optional.
S3_SECRET_MOUNT = "/var/secrets/s3"
S3_ACCESS_KEY_FILE, S3_SECRET_KEY_FILE = "accesskey", "secretkey"
NO_S3_SECRET = "pose-pipeline-no-s3-secret"
# What the launcher itself uses for minio:// on a stock install (same file,
# getDefaultMinioSessionInfo: endpoint objectstore.DefaultEndpointInMultiUserMode =
# "seaweedfs.kubeflow:9000" since 2.16.0, before that "minio-service.kubeflow:9000", which
# SeaweedFS's manifests also serve; region "minio"; disableSSL true; forcePathStyle true).
DEFAULT_S3_ENDPOINT = "seaweedfs.kubeflow:9000"
DEFAULT_S3_REGION = "minio"
DEFAULT_S3_SECRET = "mlpipeline-minio-artifact"


class ClusterContractError(ValueError):
    """A run argument that cannot work on a cluster; the message names it and says what to give instead."""


def on_kfp_cluster() -> bool:
    """True inside a pod started by a KFP backend (not under kfp.local)."""
    return bool(os.environ.get(KFP_POD_ENV))


def refuse_local_paths(arguments: dict, where: str) -> None:
    """Fails on a local-path `source` or a local-path, non-empty `publish_uri` or `checkpoint_uri` (`where`
    says who checked)."""
    for name, allowed in (
        ("source", "gs://, s3://, minio://, https:// or synthetic://N"),
        ("publish_uri", "gs://, s3:// or minio://bucket/prefix"),
        ("checkpoint_uri", "gs://, s3:// or minio://bucket/prefix"),
    ):
        value = arguments.get(name)
        if isinstance(value, str) and value.strip() and is_local(value.strip()):
            raise ClusterContractError(
                f"{name}={value!r} is a local path, but on a cluster every step runs in its own pod, whose disk "
                f"is empty and discarded afterwards ({where}); give {allowed} instead (local paths work with "
                f"`python -m pipeline run`)"
            )


# What each storage parameter takes (pose.files.storage.kind_of's kinds); "" means none for the last
# two.
STORAGE_PARAMETERS = {
    "source": ("gs", "s3", "minio", "http", "https", "synthetic", "local"),
    "publish_uri": ("gs", "s3", "minio", "local"),
    "checkpoint_uri": ("gs", "s3", "minio"),
}


def check_storage_parameters(arguments: dict, where: str, on_cluster: bool) -> None:
    """Before any task runs: every non-empty storage parameter has a scheme it takes; on a cluster
    none is a local path, and an s3:// or minio:// URI has credentials to go with it (the s3_secret,
    or no s3_endpoint: AWS, whose pods may have IRSA or an instance role); here, on this machine,
    its store has credentials. `arguments` holds every parameter's value, defaults included."""
    from pose.files import storage

    uris = {
        name: arguments[name].strip()
        for name in STORAGE_PARAMETERS
        if isinstance(arguments.get(name), str) and arguments[name].strip()
    }
    endpoint = arguments.get("s3_endpoint")
    if isinstance(endpoint, str):
        try:  # else only the cluster-settings task, in its pod, would say so
            s3_settings(endpoint, "", True, arguments.get("s3_tls") is True)
        except ClusterContractError as error:
            raise ClusterContractError(f"{error} ({where})") from None
    if on_cluster:  # first: its message says why a path cannot work there
        refuse_local_paths(uris, where)
    for name, uri in uris.items():
        try:
            storage.check_uri(name, uri, STORAGE_PARAMETERS[name])
        except storage.StorageError as error:
            raise ClusterContractError(f"{error} ({where})") from None
    if on_cluster:
        for name, uri in uris.items():
            secret = str(arguments.get("s3_secret", "")).strip()
            endpoint = str(arguments.get("s3_endpoint", "")).strip()
            if storage.kind_of(uri) in ("s3", "minio") and not secret and endpoint:
                raise ClusterContractError(
                    f"{name}={uri!r} needs S3 credentials, but s3_secret is empty while s3_endpoint "
                    f"{endpoint!r} is not AWS ({where}); name the secret holding accesskey and "
                    f"secretkey (KFP's own is {DEFAULT_S3_SECRET!r})"
                )
        return
    for name, uri in uris.items():
        problem = storage.credentials_problem(uri)
        if problem:
            raise ClusterContractError(f"{name}={uri!r}: {problem} ({where})")


# The driver names the secret's volume after the secret (backend/src/v2/driver/k8s.go,
# `Name: secretName`), and a volume name is a DNS-1123 label, stricter than a secret name (a DNS
# subdomain: dots, 253 characters).
_VOLUME_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_secret_name(secret: str, parameter: str = "gcs_secret") -> str:
    """`secret` stripped, or ClusterContractError naming `parameter` when a pod could not mount it
    ("": none)."""
    name = secret.strip()
    if name and (len(name) > 63 or not _VOLUME_NAME.fullmatch(name)):
        raise ClusterContractError(
            f"{parameter}={secret!r}: the KFP driver names the pod's volume after the secret, "
            f"and a volume name must be at most 63 characters of a-z, 0-9 and '-' (no '.'), "
            f"starting and ending with a letter or digit; create the secret under such a name"
        )
    return name


def gcs_secret_volume(gcs_secret: str) -> str:
    """The secret name to mount for `gcs_secret`: itself, or NO_GCS_SECRET for ""."""
    return check_secret_name(gcs_secret) or NO_GCS_SECRET


def use_mounted_gcs_key() -> None:
    """Points GOOGLE_APPLICATION_CREDENTIALS at the mounted service-account key, when the secret holds one.

    Done here rather than with kfp-kubernetes' use_secret_as_env: before KFP 2.15.0 the driver ignores
    `optional` for a secret env var (k8s.go in 2.14.x sets no SecretKeySelector.Optional; #12216 added
    it), so a missing secret would keep the pod from starting, and Workload Identity clusters have none.
    """
    key = os.path.join(GCS_SECRET_MOUNT, GCS_KEY_FILE)
    if os.path.isfile(key) and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = key


def s3_secret_volume(s3_secret: str) -> str:
    """The secret name to mount for `s3_secret`: itself, or NO_S3_SECRET for ""."""
    return check_secret_name(s3_secret, "s3_secret") or NO_S3_SECRET


def s3_settings(endpoint: str, region: str, path_style: bool, tls: bool) -> str:
    """The run's S3 parameters as one JSON string for the steps (use_s3_settings reads it): the
    endpoint (host, host:port or http(s)://host[:port]: pose/files/uris.py parse_endpoint) as a URL,
    https:// or http:// by its scheme or else by `tls`, or "" for AWS's own."""
    import json

    url = ""
    if endpoint.strip():  # "": AWS's own endpoint
        try:  # the one parser of the endpoint, which preflight applies before any task too
            scheme, netloc = parse_endpoint(endpoint, "s3_endpoint")
        except UriError as error:
            raise ClusterContractError(str(error)) from None
        # A scheme, when given, says whether TLS is used: s3_tls's default (false) cannot be told
        # from no choice, so only an explicit contradiction is refused.
        if scheme == "http" and tls:
            raise ClusterContractError(
                f"s3_endpoint={endpoint!r}: says http://, but s3_tls=true asks for https; "
                "drop the scheme or set s3_tls=false"
            )
        url = f"{scheme or ('https' if tls else 'http')}://{netloc}"
    return json.dumps(
        {"endpoint_url": url, "region": region.strip(), "path_style": bool(path_style)}
    )


def use_s3_settings(settings: str) -> None:
    """Sets the standard AWS environment (pose/files/storage_s3.py reads it) from the run's S3
    parameters and the mounted secret. Empty parameters leave what the pod has: on EKS, IRSA's
    AWS_REGION, AWS_ROLE_ARN and token file, which boto3's default chain then uses."""
    import json

    values = json.loads(settings) if settings else {}
    if values.get("endpoint_url"):
        os.environ["AWS_ENDPOINT_URL"] = values["endpoint_url"]
        os.environ["POSE_S3_PATH_STYLE"] = "true" if values.get("path_style", True) else "false"
    if values.get("region"):
        os.environ["AWS_REGION"] = values["region"]
    keys = [
        os.path.join(S3_SECRET_MOUNT, name) for name in (S3_ACCESS_KEY_FILE, S3_SECRET_KEY_FILE)
    ]
    if all(os.path.isfile(key) for key in keys) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        with open(keys[0]) as access, open(keys[1]) as secret:
            os.environ["AWS_ACCESS_KEY_ID"] = access.read().strip()
            os.environ["AWS_SECRET_ACCESS_KEY"] = secret.read().strip()


# The most GPUs one node has: a pod's GPUs all come from one node, and the largest GPU machines
# clouds offer hold 16 (GCP a2-megagpu-16g: 16 A100s; AWS p4d/p5 and Azure ND hold 8). A pod asking
# for more is never scheduled: it stays Pending, and the run with it, with no error.
MAX_GPUS_PER_NODE = 16


def accelerator_count(gpu_count: int) -> str:
    """`gpu_count` as the decimal string the driver parses into the accelerator limit."""
    if (
        isinstance(gpu_count, bool)
        or not isinstance(gpu_count, (int, float))
        or int(gpu_count) != gpu_count
        or not 0 <= gpu_count <= MAX_GPUS_PER_NODE
    ):
        raise ClusterContractError(
            f"gpu_count={gpu_count!r}: expected a whole number of GPUs from 0 to "
            f"{MAX_GPUS_PER_NODE} (MAX_GPUS_PER_NODE: the most one node has; a pod's GPUs all "
            "come from one node)"
        )
    return str(int(gpu_count))
