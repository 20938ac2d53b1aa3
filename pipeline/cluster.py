"""What a run on a Kubeflow Pipelines cluster needs that a kfp.local run does not: the one owner of the
cluster contract's run-time rules (README "On a cluster").

Used before submission (pipeline/submit.py) and inside the pods (the bodies in pipeline/ops.py, in every
image), so it imports nothing beyond the standard library and pose/files/uris.py (the local-path
rule).

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

from pose.files.uris import is_local

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

class ClusterContractError(ValueError):
    """A run argument that cannot work on a cluster; the message names it and says what to give instead."""


def on_kfp_cluster() -> bool:
    """True inside a pod started by a KFP backend (not under kfp.local)."""
    return bool(os.environ.get(KFP_POD_ENV))


def refuse_local_paths(arguments: dict, where: str) -> None:
    """Fails on a local-path `source` or a local-path, non-empty `publish_uri` or `checkpoint_uri` (`where`
    says who checked)."""
    for name, allowed in (("source", "gs://, https:// or synthetic://N"), ("publish_uri", "gs://bucket/prefix"),
                          ("checkpoint_uri", "gs://bucket/prefix")):
        value = arguments.get(name)
        if isinstance(value, str) and value.strip() and is_local(value.strip()):
            raise ClusterContractError(
                f"{name}={value!r} is a local path, but on a cluster every step runs in its own pod, whose disk "
                f"is empty and discarded afterwards ({where}); give {allowed} instead (local paths work with "
                f"`python -m pipeline run`)")


# The driver names the secret's volume after the secret (backend/src/v2/driver/k8s.go,
# `Name: secretName`), and a volume name is a DNS-1123 label, stricter than a secret name (a DNS
# subdomain: dots, 253 characters).
_VOLUME_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_secret_name(gcs_secret: str) -> str:
    """`gcs_secret` stripped, or ClusterContractError when a pod could not mount it ("": none)."""
    name = gcs_secret.strip()
    if name and (len(name) > 63 or not _VOLUME_NAME.fullmatch(name)):
        raise ClusterContractError(
            f"gcs_secret={gcs_secret!r}: the KFP driver names the pod's volume after the secret, "
            f"and a volume name must be at most 63 characters of a-z, 0-9 and '-' (no '.'), "
            f"starting and ending with a letter or digit; create the secret under such a name")
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


def accelerator_count(gpu_count: int) -> str:
    """`gpu_count` as the decimal string the driver parses into the accelerator limit."""
    if isinstance(gpu_count, bool) or int(gpu_count) != gpu_count or gpu_count < 0:
        raise ClusterContractError(f"gpu_count={gpu_count!r}: expected a whole number of GPUs, 0 or more")
    return str(int(gpu_count))
