"""Issue 15: nothing lost, nothing escapes, nothing silent. One test per finding of the careless-and-hostile
probe (docs/RELIABILITY.md lists them with their verdicts), each on tiny data through the real steps: a real
fake-gcs-server (tests/gcs.py) for gs:// and publish, a real http.server for the stalled download.
"""

import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose.data import keypoints
from tests.conftest import REPO, TINY_CONFIG, TINY_TRAINING
from tests.s3 import ENVIRONMENT as S3_ENVIRONMENT
from tests.test_convert import aic_record, image_id, write_release
from tests.test_shard import write_tiny_coco
from tests.tiny_models import build_tiny_pose_model, save_as_train_output

INPUT_SIZE = 64


# ---------------------------------------------------------------------------------------------
# Shared tiny inputs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    """A COCO folder (convert's layout) with a train and a valid split of a few people each."""
    root = tmp_path_factory.mktemp("reliability") / "coco"
    write_tiny_coco(root, "train", seed=0)
    write_tiny_coco(root, "valid", seed=1)
    return root


@pytest.fixture(scope="module")
def shards(coco, tmp_path_factory) -> dict:
    from components.shard import shard

    out = tmp_path_factory.mktemp("reliability-shards")
    shard(str(coco), str(out / "train"), "train", 2, crop_size=96)
    shard(str(coco), str(out / "valid"), "valid", 1, crop_size=96)
    return {"train": out / "train", "valid": out / "valid"}


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory, shards) -> Path:
    """The real freeze and tflite steps on a tiny stand-in model: fp32 only."""
    from components.freeze import freeze
    from components.tflite import convert_to_tflite

    root = tmp_path_factory.mktemp("reliability-models")
    save_as_train_output(build_tiny_pose_model(INPUT_SIZE), root / "model")
    freeze(str(root / "model"), str(root / "frozen"))
    convert_to_tflite(str(root / "frozen"), str(root / "tflite"), ["fp32"])
    return root / "tflite"


@pytest.fixture()
def no_anchors(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "no-anchors"
    folder.mkdir()
    monkeypatch.setenv("POSE_ANCHORS_DIR", str(folder))
    return str(folder)


def _foreign_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def _cli(main, argv, capsys) -> tuple[int, str]:
    """Runs a step's CLI in-process; returns (exit code, stderr's last line), checking stderr ends in one
    error line (no traceback)."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert not any(line.startswith("Traceback") for line in err), err
    return code, err[-1] if err else ""


# ---------------------------------------------------------------------------------------------
# Data loss: no step deletes what it did not write
# ---------------------------------------------------------------------------------------------


def test_freeze_refuses_a_foreign_output(tmp_path):
    from components.freeze import freeze
    from pose.files.outputs import OutputError

    model = save_as_train_output(build_tiny_pose_model(INPUT_SIZE), tmp_path / "model")
    other = _foreign_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match="not a previous freeze output"):
        freeze(str(model), str(other))
    assert (other / "thesis.tex").read_text() == "years of work"


def test_tflite_refuses_a_foreign_output(tmp_path, tflite_models):
    from components.tflite import convert_to_tflite
    from pose.files.outputs import OutputError

    other = _foreign_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match="not a previous tflite output"):
        convert_to_tflite(str(tflite_models.parent / "frozen"), str(other), ["fp32"])
    assert (other / "thesis.tex").exists()


def test_evaluate_refuses_a_foreign_output(tmp_path, tflite_models, shards, no_anchors):
    from components.evaluate import evaluate
    from pose.files.outputs import OutputError

    other = _foreign_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match="not a previous evaluate output"):
        evaluate(str(tflite_models), [str(shards["valid"])], str(other), latency_runs=1)
    assert (other / "thesis.tex").exists()


def test_shard_refuses_a_foreign_output(tmp_path, coco):
    from components.shard import shard
    from pose.files.outputs import OutputError

    other = _foreign_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match="not a previous shard output"):
        shard(str(coco), str(other), "train", 1, crop_size=64)
    assert (other / "thesis.tex").exists()


def test_a_step_replaces_its_own_previous_output(tmp_path, coco):
    from components.shard import shard

    shard(str(coco), str(tmp_path / "out"), "valid", 1, crop_size=64)
    index = shard(str(coco), str(tmp_path / "out"), "valid", 2, crop_size=64)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tfrecord")) == sorted(index["shards"])


def test_output_equal_to_or_inside_an_input_is_refused(tmp_path, coco):
    from components.freeze import freeze
    from components.shard import shard
    from pose.files.outputs import OutputError

    model = save_as_train_output(build_tiny_pose_model(INPUT_SIZE), tmp_path / "model")
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(OutputError, match="is the input"):
        freeze(str(model), str(model))
    assert sorted(p.name for p in model.iterdir()) == before
    copy = tmp_path / "coco"
    shutil.copytree(coco, copy)
    with pytest.raises(OutputError, match="is the input"):
        shard(str(copy), str(copy), "train", 1)
    with pytest.raises(OutputError, match="inside the input"):
        shard(str(copy), str(copy / "images"), "train", 1)
    with pytest.raises(OutputError, match="holds the input"):
        shard(str(copy), str(tmp_path), "train", 1)
    assert (copy / "annotations" / "person_keypoints_train.json").is_file()


class _RefusingProxy:
    """A real HTTP reverse proxy in front of a storage server (fake-gcs-server, SeaweedFS) that answers 403
    to any upload (POST, PUT, PATCH) naming `refuse` (in its URL or body) while `refuse` is set: a server
    refusing to store one object; reads (GET, HEAD) pass. It passes the Host header on as it came, which
    S3's signatures cover."""

    def __init__(self, upstream: str):
        self.upstream = upstream.split("://", 1)[-1].rstrip("/")
        self.refuse: bytes | None = None
        self.spare: bytes | None = None  # an upload naming this passes even when it names `refuse`
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                uploading = self.command in ("POST", "PUT", "PATCH")
                named = proxy.refuse and (
                    proxy.refuse in self.path.encode() or proxy.refuse in body
                )
                named = named and not (proxy.spare and proxy.spare in self.path.encode() + body)
                if uploading and named:
                    message = b'{"error": {"code": 403, "message": "refused by the test proxy"}}'
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _evaluated(tflite_models, shards, folder: Path) -> Path:
    from components.evaluate import evaluate

    evaluate(
        str(tflite_models), [str(shards["valid"])], str(folder), latency_runs=1, gallery_size=1
    )
    return folder


def test_failed_republish_leaves_no_manifest(
    tmp_path, tflite_models, shards, no_anchors, object_store, monkeypatch
):
    from components.publish import MANIFEST, PENDING, PublishError, publish

    evaluation = _evaluated(tflite_models, shards, tmp_path / "evaluation")
    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/pose"
    server = os.environ[
        "STORAGE_EMULATOR_HOST" if object_store.scheme == "gs" else "AWS_ENDPOINT_URL"
    ]
    proxy = _RefusingProxy(server)
    monkeypatch.setenv(
        "STORAGE_EMULATOR_HOST" if object_store.scheme == "gs" else "AWS_ENDPOINT_URL", proxy.url
    )
    monkeypatch.setenv("POSE_NETWORK_RETRY", "2")
    try:
        publish(str(tflite_models), str(evaluation), str(evaluation), base, "fp32")
        assert object_store.exists(f"{base}/{MANIFEST}")
        # A republish of changed files in which the server refuses one upload part way.
        changed = tmp_path / "tflite2"
        shutil.copytree(tflite_models, changed)
        metadata = json.loads((changed / "mv2_cpm_fp32.json").read_text())
        (changed / "mv2_cpm_fp32.json").write_text(
            json.dumps({**metadata, "note": "second export"})
        )
        proxy.refuse = b"report.html"
        proxy.spare = PENDING.encode()  # the list of what it writes names report.html too
        with pytest.raises(PublishError, match=f"no {MANIFEST} is there"):
            publish(str(changed), str(evaluation), str(evaluation), base, "fp32")
        assert not object_store.exists(f"{base}/{MANIFEST}")  # nothing vouches for the mixed set
        # The new .json went up before the failure: an old manifest would vouch for it with a stale sha256.
        assert b"second export" in object_store.get(f"{base}/mv2_cpm_fp32.json")
        assert object_store.exists(f"{base}/{PENDING}")  # what it was writing: publish's own
        proxy.refuse = None
        # The retry finds the failed publish's files and replaces them: its pending list vouches
        # for them (they are not the user's, though no manifest lists them).
        manifest = publish(str(changed), str(evaluation), str(evaluation), base, "fp32")
        assert not object_store.exists(f"{base}/{PENDING}")
        uploaded = json.loads(object_store.get(f"{base}/{MANIFEST}"))
        for name, entry in uploaded["files"].items():
            stored = object_store.get(f"{base}/{name}")
            if object_store.headers(f"{base}/{name}")[1] == "gzip":
                stored = gzip.decompress(stored)
            assert hashlib.sha256(stored).hexdigest() == entry["sha256"], name
        assert manifest["uris"][-1].endswith(MANIFEST)
    finally:
        proxy.close()


def test_republish_removes_files_of_the_previous_manifest(
    tmp_path, tflite_models, shards, no_anchors
):
    from components.publish import MANIFEST, publish

    evaluation = _evaluated(tflite_models, shards, tmp_path / "evaluation")
    destination = tmp_path / "published"
    publish(str(tflite_models), str(evaluation), str(evaluation), str(destination), "fp32")
    old = json.loads((destination / MANIFEST).read_text())
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in tflite_models.glob("mv2_cpm_fp32.*"):
        shutil.copyfile(path, renamed / path.name.replace("mv2_cpm", "mv2_cpm_b"))
    results = json.loads((evaluation / "results.json").read_text())
    results["models"]["mv2_cpm_b_fp32"] = results["models"]["mv2_cpm_fp32"]
    (evaluation / "results.json").write_text(json.dumps(results))
    publish(str(renamed), str(evaluation), str(evaluation), str(destination), "fp32")
    assert "mv2_cpm_fp32.tflite" in old["files"]
    listed = json.loads((destination / MANIFEST).read_text())["files"]
    assert "mv2_cpm_b_fp32.tflite" in listed
    on_disk = [p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file()]
    assert sorted(on_disk) == sorted([*listed, MANIFEST])


# ---------------------------------------------------------------------------------------------
# Escape: paths from records stay inside the release
# ---------------------------------------------------------------------------------------------


def _release_with(tmp_path: Path, record: dict) -> Path:
    root = tmp_path / "raw"
    train = [aic_record(image_id("train", i)) for i in range(2)]
    write_release(root, train=train)
    images = next(root.rglob("keypoint_train_images_20170902"))
    annotations = next(root.rglob("keypoint_train_annotations_20170909.json"))
    victim = images / f"{record['image_id']}.jpg"
    victim.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(images / f"{train[0]['image_id']}.jpg", victim)
    annotations.write_text(json.dumps(train + [record]))
    return root


def test_image_id_with_dot_dot_is_rejected(tmp_path):
    from components.convert import InvalidRecord, convert

    work = tmp_path / "a" / "b" / "c"  # deep enough that the probe's five '..' stay inside tmp_path
    root = _release_with(work, aic_record("../../../../../PWNED"))
    planted = sorted(
        tmp_path.rglob("PWNED*")
    )  # the file the record points at, outside the image folder
    with pytest.raises(InvalidRecord, match=r"record 2 .*not a plain file name"):
        convert(str(root), str(work / "coco"))
    counts = convert(str(root), str(work / "coco"), skip_invalid=True)
    assert counts["train_images"] == 2 and counts["rejected"] == 1
    names = [
        image["file_name"]
        for image in json.loads(
            (work / "coco/annotations/person_keypoints_train.json").read_text()
        )["images"]
    ]
    assert not any("/" in name or ".." in name for name in names)
    assert sorted(tmp_path.rglob("PWNED*")) == planted  # nothing linked outside the output


def test_image_id_with_slash_is_a_clear_error(tmp_path, capsys):
    from components.convert import main

    root = _release_with(tmp_path, aic_record("sub/folder"))
    code, line = _cli(main, ["--input", str(root), "--output", str(tmp_path / "coco")], capsys)
    assert code == 1
    assert (
        line.startswith("convert: error: ")
        and "'sub/folder'" in line
        and "not a plain file name" in line
    )


def test_shard_refuses_a_file_name_outside_its_input(tmp_path):
    from components.shard import ShardError, shard

    coco = tmp_path / "coco"
    data = write_tiny_coco(coco, "train")
    outside = tmp_path / "outside.jpg"
    shutil.copyfile(coco / "images" / "train" / data["images"][0]["file_name"], outside)
    data["images"][0]["file_name"] = "../../../outside.jpg"
    (coco / "annotations" / "person_keypoints_train.json").write_text(json.dumps(data))
    with pytest.raises(ShardError, match=r"'\.\./\.\./\.\./outside\.jpg' is not a plain file name"):
        shard(str(coco), str(tmp_path / "out"), "train", 1)


# ---------------------------------------------------------------------------------------------
# Silently wrong
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"]
)
@pytest.mark.parametrize("position", [0, 19], ids=["first", "later"])
def test_non_finite_coordinates_are_rejected(tmp_path, value, position):
    from components.convert import InvalidRecord, convert

    record = aic_record(image_id("train", 9))
    record["keypoint_annotations"]["human1"][position] = value
    root = _release_with(tmp_path, record)
    with pytest.raises(InvalidRecord, match="not finite"):
        convert(str(root), str(tmp_path / "coco"))


def test_non_finite_box_corner_is_rejected(tmp_path):
    from components.convert import InvalidRecord, convert

    record = aic_record(image_id("train", 9))
    record["human_annotations"]["human1"][2] = float("nan")
    root = _release_with(tmp_path, record)
    with pytest.raises(InvalidRecord, match="not a finite number"):
        convert(str(root), str(tmp_path / "coco"))


@pytest.mark.parametrize("field, index", [("keypoints", 3), ("bbox", 1)])
def test_shard_refuses_non_finite_numbers_in_a_coco_file(tmp_path, field, index):
    """A COCO folder made by hand (not by convert) is checked where shard first reads it."""
    from components.shard import ShardError, shard

    coco = tmp_path / "coco"
    data = write_tiny_coco(coco, "train")
    data["annotations"][0][field][index] = float("nan")
    (coco / "annotations" / "person_keypoints_train.json").write_text(json.dumps(data))
    with pytest.raises(
        ShardError, match=r"annotations\[0\] .*not a finite number|bbox must be finite"
    ):
        shard(str(coco), str(tmp_path / "out"), "train", 1)


def _tiny_release_tar(tmp_path: Path) -> tuple[Path, list[int]]:
    """A plain .tar of an 8-image folder; returns it and the offsets where its members end."""
    source = tmp_path / "release"
    source.mkdir()
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for i in range(8):
        (source / f"{i:040x}.jpg").write_bytes(jpeg)
    archive = tmp_path / "release.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as bundle:
        bundle.add(source, arcname="aic")
    with tarfile.open(archive) as bundle:
        ends = [
            member.offset_data + (member.size + 511) // 512 * 512 for member in bundle.getmembers()
        ]
    return archive, ends


def test_tar_cut_at_a_member_boundary_is_an_error(tmp_path):
    from components.download import DownloadError, download

    archive, ends = _tiny_release_tar(tmp_path)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: ends[3]])  # the folder entry and 3 images
    with pytest.raises(DownloadError, match="ends early, after 4 members"):
        download(str(cut), str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists()
    download(str(archive), str(tmp_path / "whole"))  # the uncut archive still downloads


def test_empty_file_download_is_an_error(tmp_path):
    from components.download import DownloadError, download

    (tmp_path / "release").write_bytes(b"")
    with pytest.raises(DownloadError, match="empty file"):
        download(str(tmp_path / "release"), str(tmp_path / "raw"))
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DownloadError, match="yielded no images"):
        download(str(tmp_path / "notes.txt"), str(tmp_path / "raw"))
    assert (
        download(str(tmp_path / "notes.txt"), str(tmp_path / "raw"), allow_no_images=True)["images"]
        == 0
    )


def _cut_shard(shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a shard folder whose first shard lost its last record (cut at the record boundary)."""
    import tensorflow as tf

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    name = sorted(copy.glob("*.tfrecord"))[0]
    records = list(tf.data.TFRecordDataset(str(name)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(name)) as writer:
        for record in records[:-1]:
            writer.write(record)
    return copy, name


def test_shard_cut_at_a_record_boundary_is_named_by_train_and_evaluate(
    tmp_path, shards, tflite_models, no_anchors
):
    from components.evaluate import evaluate
    from components.train import train
    from pose.files.integrity import IntegrityError

    cut, name = _cut_shard(shards["valid"], tmp_path)
    with pytest.raises(IntegrityError, match=f"{name}: .* bytes, but .*index.json says"):
        evaluate(str(tflite_models), [str(cut)], str(tmp_path / "evaluation"), latency_runs=1)
    cut_train, train_name = _cut_shard(shards["train"], tmp_path / "t")
    with pytest.raises(IntegrityError, match=f"{train_name}: "):
        train(
            str(TINY_CONFIG),
            [str(cut_train)],
            str(tmp_path / "model"),
            overrides={"input_size": 64},
        )


def test_shard_index_without_checksums_is_checked_by_count(tmp_path, shards):
    from pose.files.integrity import IntegrityError, verify_shards

    cut, name = _cut_shard(shards["valid"], tmp_path)
    index = json.loads((cut / "index.json").read_text())
    del index["checksums"]
    (cut / "index.json").write_text(json.dumps(index))
    with pytest.raises(IntegrityError, match=f"{name}: .* records, but .* says"):
        verify_shards([str(cut)])


def test_flipped_tflite_is_refused(tmp_path, tflite_models, shards, no_anchors):
    from components.evaluate import evaluate
    from components.publish import publish
    from pose.files.integrity import IntegrityError

    metadata = json.loads((tflite_models / "mv2_cpm_fp32.json").read_text())
    assert (
        metadata["sha256"]
        == hashlib.sha256((tflite_models / "mv2_cpm_fp32.tflite").read_bytes()).hexdigest()
    )
    evaluation = _evaluated(tflite_models, shards, tmp_path / "evaluation")
    flipped = tmp_path / "flipped"
    shutil.copytree(tflite_models, flipped)
    data = bytearray((flipped / "mv2_cpm_fp32.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a weight byte: LiteRT would load and run it
    (flipped / "mv2_cpm_fp32.tflite").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="mv2_cpm_fp32.tflite: sha256 differs"):
        evaluate(str(flipped), [str(shards["valid"])], str(tmp_path / "again"), latency_runs=1)
    with pytest.raises(IntegrityError, match="mv2_cpm_fp32.tflite: sha256 differs"):
        publish(str(flipped), str(evaluation), str(evaluation), str(tmp_path / "published"), "fp32")
    assert not (tmp_path / "published").exists()


def test_jpeg_with_random_scan_data_is_rejected(tmp_path):
    from components.shard import ShardError, shard

    coco = tmp_path / "coco"
    data = write_tiny_coco(coco, "train")
    path = coco / "images" / "train" / data["images"][1]["file_name"]
    original = path.read_bytes()
    scan = original.index(b"\xff\xda")
    scan += 2 + int.from_bytes(original[scan + 2 : scan + 4], "big")
    noise = (
        np.random.default_rng(0)
        .integers(0, 256, len(original) - scan - 2, dtype=np.uint8)
        .tobytes()
    )
    path.write_bytes(
        original[:scan] + noise + b"\xff\xd9"
    )  # valid header and end marker, random scan
    assert cv2.imread(str(path)) is not None  # OpenCV decodes it, grey and noise
    with pytest.raises(
        ShardError, match=f"{path.name}: (corrupt|truncated|.*after the end-of-image)"
    ):
        shard(str(coco), str(tmp_path / "out"), "train", 1)


def test_whole_jpegs_pass_the_check():
    """No false alarms: baseline, progressive and restart-marker JPEGs of many sizes and qualities."""
    from pose.data import jpeg

    rng = np.random.default_rng(1)
    for i in range(60):
        height, width = (int(v) for v in rng.integers(16, 200, 2))
        image = cv2.GaussianBlur(
            (rng.random((height, width, 3)) * 255).astype(np.uint8), (5, 5), 1.5
        )
        options = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 101))]
        options += [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 3]][
            i % 3
        ]
        assert jpeg.problem(cv2.imencode(".jpg", image, options)[1].tobytes()) is None


def test_empty_release_is_an_error(tmp_path):
    from components.convert import ConvertError, convert

    write_release(tmp_path / "raw", train=[], valid=[])
    with pytest.raises(ConvertError, match=r"no train image \(or no person\) left"):
        convert(str(tmp_path / "raw"), str(tmp_path / "coco"))
    counts = convert(str(tmp_path / "raw"), str(tmp_path / "coco"), allow_empty=True)
    assert counts["train_images"] == 0
    nobody = [
        {**aic_record(image_id("train", i)), "keypoint_annotations": {}, "human_annotations": {}}
        for i in range(2)
    ]
    write_release(tmp_path / "raw2", train=nobody)
    with pytest.raises(
        ConvertError, match=r"no train image \(or no person\) left to convert \(2 records"
    ):
        convert(str(tmp_path / "raw2"), str(tmp_path / "coco2"))


def test_zero_persons_is_an_error(tmp_path):
    from components.shard import ShardError, shard

    coco = tmp_path / "coco"
    data = write_tiny_coco(coco, "train")
    data["annotations"] = []
    (coco / "annotations" / "person_keypoints_train.json").write_text(json.dumps(data))
    with pytest.raises(ShardError, match="no train person with a labelled joint"):
        shard(str(coco), str(tmp_path / "out"), "train", 2)
    assert (
        shard(str(coco), str(tmp_path / "out"), "train", 2, allow_empty=True)["num_examples"] == 0
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("decay_rate: -1", "'decay_rate' = -1.0: must be positive"),
        ("lr: .nan", "'lr' = nan: must be a finite number"),
        ("lr: .inf", "'lr' = inf: must be a finite number"),
        ("sigma: .nan", "'sigma' = nan: must be a finite number"),
        ("shuffle_buffer: -5", "'shuffle_buffer' = -5: must not be negative"),
        ("lr: 0.1\nsigma: 2\nlr: 0.2", "key 'lr' is given twice"),
        ("batch_norm_momentum: 1.5", "'batch_norm_momentum' = 1.5: must be in"),
        ("augmentation: {rotation_degrees: .nan}", "rotation_degrees must be finite"),
    ],
    ids=[
        "decay_rate",
        "lr-nan",
        "lr-inf",
        "sigma-nan",
        "shuffle_buffer",
        "duplicate-key",
        "momentum",
        "augmentation-nan",
    ],
)
def test_config_numbers_are_finite_and_in_range(text, message):
    from pose.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(text)


def test_config_reads_1e_3_as_a_number():
    from pose.training.config import load_config, parse_overrides

    assert load_config("lr: 1e-3").lr == 0.001
    assert load_config(None, parse_overrides(["lr=2e-4"])).lr == 0.0002


def test_evaluate_on_train_shards_warns(tmp_path, tflite_models, shards, no_anchors, caplog):
    from components.evaluate import evaluate

    evaluate(
        str(tflite_models),
        [str(shards["train"])],
        str(tmp_path / "evaluation"),
        latency_runs=1,
        gallery_size=0,
    )
    assert any(
        "split 'train'" in record.getMessage() and "not on validation shards" in record.getMessage()
        for record in caplog.records
    )


def test_freeze_refuses_a_classifier(tmp_path):
    import keras

    from components.freeze import FreezeError, freeze

    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    classifier = keras.Model(image, keras.layers.Dense(10, activation="softmax")(pooled))
    folder = tmp_path / "model"
    folder.mkdir()
    classifier.save(folder / "model.keras")
    (folder / "train_metadata.json").write_text(
        json.dumps({"model": "mv2_cpm"})
    )  # as the probe: named a CPM
    with pytest.raises(FreezeError, match="not a pose model"):
        freeze(str(folder), str(tmp_path / "frozen"))
    assert not (tmp_path / "frozen").exists()


# ---------------------------------------------------------------------------------------------
# Loud but unhelpful
# ---------------------------------------------------------------------------------------------


def test_every_step_cli_ends_in_one_line(tmp_path, capsys):
    from components import download, publish, shard, train

    cases = [
        (
            download.main,
            ["--source", str(tmp_path / "absent.zip"), "--output", str(tmp_path / "raw")],
            "download",
        ),
        (
            shard.main,
            [
                "--input",
                str(tmp_path),
                "--output",
                str(tmp_path / "s"),
                "--split",
                "train",
                "--num-shards",
                "1",
            ],
            "shard",
        ),
        (
            train.main,
            ["--config", "lr: .nan", "--data", str(tmp_path), "--output", str(tmp_path / "m")],
            "train",
        ),
        (
            publish.main,
            [
                "--models",
                str(tmp_path),
                "--report",
                str(tmp_path / "r.html"),
                "--results",
                str(tmp_path / "x.json"),
                "--destination",
                str(tmp_path / "p"),
            ],
            "publish",
        ),
    ]
    for main, argv, step in cases:
        code, line = _cli(main, argv, capsys)
        assert code == 1 and line.startswith(f"{step}: error: "), line


def test_corrupt_shard_names_the_file(tmp_path, shards, tflite_models, no_anchors):
    from components.evaluate import evaluate
    from pose.data import records
    from pose.files.integrity import IntegrityError, verify_shards

    copy = tmp_path / "shards"
    shutil.copytree(shards["valid"], copy)
    [name] = copy.glob("*.tfrecord")
    data = bytearray(name.read_bytes())
    data[len(data) // 2] ^= 0x55
    name.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{name}: sha256 differs"):
        evaluate(str(tflite_models), [str(copy)], str(tmp_path / "evaluation"), latency_runs=1)
    index = json.loads((copy / "index.json").read_text())
    del index["checksums"]  # shards from before checksums: the record CRCs name it
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(records.CorruptShardError, match=f"{name}: record"):
        verify_shards([str(copy)])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_network_defaults_are_bounded(monkeypatch):
    from pose.files import storage, storage_gcs

    for name in ("POSE_NETWORK_TIMEOUT", "POSE_NETWORK_RETRY", "POSE_HTTP_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    options = storage_gcs.gcs_options()
    assert options["timeout"] + options["retry"].timeout <= 30
    assert storage.network_timeout() * (1 + 1) <= 30  # http: one retry of one timeout


def test_unreachable_gcs_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    from components.download import DownloadError, download

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("POSE_NETWORK_RETRY", "2")
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"gs://releases/aic.zip: gave up after 2 s of retries"):
        download("gs://releases/aic.zip", str(tmp_path / "raw"))
    assert time.monotonic() - started < 15


def test_unreachable_publish_fails_fast_with_a_clear_message(
    tmp_path, tflite_models, shards, no_anchors, monkeypatch
):
    from components.publish import PublishError, publish

    evaluation = _evaluated(tflite_models, shards, tmp_path / "evaluation")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("POSE_NETWORK_RETRY", "2")
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"gs://models/pose.*gave up after 2 s"):
        publish(str(tflite_models), str(evaluation), str(evaluation), "gs://models/pose", "fp32")
    assert time.monotonic() - started < 15


def test_stalled_http_times_out_clearly(tmp_path, monkeypatch):
    from components.download import DownloadError, download

    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            release.wait(30)  # accepts the request, never answers

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("POSE_NETWORK_TIMEOUT", "1")
    monkeypatch.setenv("POSE_HTTP_RETRIES", "1")
    url = f"http://127.0.0.1:{server.server_address[1]}/release.zip"
    started = time.monotonic()
    try:
        with pytest.raises(
            DownloadError, match=r"no answer within 1 s \(POSE_NETWORK_TIMEOUT\), after 2 attempt"
        ):
            download(url, str(tmp_path / "raw"))
        assert time.monotonic() - started < 10
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_random_model_keras_is_named_clearly(tmp_path):
    from components.freeze import FreezeError, freeze

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FreezeError, match=r"model.keras: not a Keras model file"):
        freeze(str(tmp_path / "model"), str(tmp_path / "frozen"))


def test_random_pb_is_named_clearly(tmp_path, tflite_models):
    from components.tflite import TFLiteConversionError, convert_to_tflite

    frozen = tmp_path / "frozen"
    shutil.copytree(tflite_models.parent / "frozen", frozen)
    (frozen / "frozen_graph.pb").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(TFLiteConversionError, match=r"frozen_graph.pb: not a readable GraphDef"):
        convert_to_tflite(str(frozen), str(tmp_path / "out"), ["fp32"])


def test_latency_runs_zero_is_refused(tmp_path, tflite_models, shards, capsys):
    from components.evaluate import main

    code, line = _cli(
        main,
        [
            "--models",
            str(tflite_models),
            "--data",
            str(shards["valid"]),
            "--output",
            str(tmp_path / "out"),
            "--latency-runs",
            "0",
        ],
        capsys,
    )
    assert code == 1 and "--latency-runs 0: at least 1" in line


def test_predict_to_txt_is_refused(tmp_path, tflite_models, capsys):
    from components.evaluate import main

    image = tmp_path / "person.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code, line = _cli(
        main,
        [
            "predict",
            "--model",
            str(tflite_models / "mv2_cpm_fp32.tflite"),
            "--image",
            str(image),
            "--output",
            str(tmp_path / "x.txt"),
        ],
        capsys,
    )
    assert (
        code == 1
        and line.startswith("predict: error: ")
        and "x.txt: cannot write a .txt file" in line
    )


# ---------------------------------------------------------------------------------------------
# Resume corners (these train a tiny model a few steps)
# ---------------------------------------------------------------------------------------------

TINY_STEPS = {**TINY_TRAINING, "max_steps": 2}


@pytest.mark.slow
def test_resume_with_another_width_says_so(tmp_path, shards):
    from components.train import TrainError, train
    from pose.files.remote_checkpoints import FINGERPRINT_FILE

    train(
        str(TINY_CONFIG),
        [str(shards["train"])],
        str(tmp_path / "model"),
        overrides={**TINY_STEPS, "max_steps": 1},
    )
    wider = {**TINY_STEPS, "width": 0.5, "max_steps": 2}
    with pytest.raises(TrainError, match=r"written for .*'width': 0.35.*gives .*'width': 0.5"):
        train(str(TINY_CONFIG), [str(shards["train"])], str(tmp_path / "model"), overrides=wider)
    # A folder from before checkpoint fingerprints: the restore's shape mismatch is named the same way.
    (tmp_path / "model" / "checkpoints" / FINGERPRINT_FILE).unlink()
    with pytest.raises(
        TrainError, match=r"do not fit this model .*width 0.5.*written by another config"
    ):
        train(str(TINY_CONFIG), [str(shards["train"])], str(tmp_path / "model"), overrides=wider)


@pytest.mark.slow
def test_resume_at_the_end_keeps_final_loss_and_speed(tmp_path, shards):
    from components.train import train

    first = train(
        str(TINY_CONFIG), [str(shards["train"])], str(tmp_path / "model"), overrides=TINY_STEPS
    )
    # Killed after the last checkpoint but before model.keras and the metadata were written.
    (tmp_path / "model" / "model.keras").unlink()
    (tmp_path / "model" / "train_metadata.json").unlink()
    again = train(
        str(TINY_CONFIG), [str(shards["train"])], str(tmp_path / "model"), overrides=TINY_STEPS
    )
    assert (tmp_path / "model" / "model.keras").is_file()
    assert again["final_loss"] == pytest.approx(first["final_loss"])
    assert again["images_per_second"] > 0 and np.isfinite(again["final_loss"])


@pytest.mark.slow
def test_time_budget_counts_across_restarts(tmp_path, shards):
    from components.train import train
    from pose.files import checkpoint_manifest
    from pose.training.checkpoints import PROGRESS

    budget = {**TINY_STEPS, "max_minutes": 5.0, "max_steps": 1000}
    model = tmp_path / "model"
    train(
        str(TINY_CONFIG), [str(shards["train"])], str(model), overrides={**budget, "max_steps": 2}
    )
    progress_path = model / "checkpoints" / f"ckpt-2.{PROGRESS}"
    progress = json.loads(progress_path.read_text())
    progress["train_seconds"] = 301.0  # as if the earlier runs had spent the five minutes
    progress_path.write_text(json.dumps(progress))
    manifest = model / "checkpoints" / checkpoint_manifest.name(2)  # sealed with it
    checkpoint_manifest.write(
        model / "checkpoints", 2, json.loads(manifest.read_text())["fingerprint"]
    )
    again = train(str(TINY_CONFIG), [str(shards["train"])], str(model), overrides=budget)
    assert again["steps"] == 2  # nothing left of the budget: no further step
    assert again["train_seconds"] >= 301


def test_stale_temporary_siblings_are_removed(tmp_path):
    import subprocess
    import sys

    from components.download import download

    # A download killed with SIGKILL part way leaves its temporary folder behind.
    script = (
        "import os, components.download as d, pose.files.storage as s\n"
        "def stop(*a, **k): os.kill(os.getpid(), 9)\n"
        "d._fetch = stop\n"
        f"d.download('synthetic://8', {str(tmp_path / 'raw')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert list(tmp_path.glob(".raw.tmp-*")), "the killed run should have left its temporary folder"
    download("synthetic://8", str(tmp_path / "raw"))
    assert not list(tmp_path.glob(".raw.*")), sorted(p.name for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Issue 21: bombs (pictures, configs, archives, renders)
# ---------------------------------------------------------------------------------------------


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) rewritten to claim width x height: a bomb of a few
    KB."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 9 :]


def test_convert_bounds_the_pixels_an_image_header_claims(tmp_path, capsys):
    from components.convert import InvalidRecord, convert, main
    from pose.data import pixels

    limit = 8192 * 8192
    assert limit == pixels.MAX_IMAGE_PIXELS
    root = _release_with(tmp_path, aic_record("b" * 40))
    images = next(root.rglob("keypoint_train_images_20170902"))
    bomb = images / f"{'b' * 40}.jpg"
    real = bomb.read_bytes()
    bomb.write_bytes(_claiming(real, 8192, 8192))  # just at the limit: accepted
    assert convert(str(root), str(tmp_path / "at"))["train_images"] == 3
    bomb.write_bytes(_claiming(real, 8193, 8192))  # one column over
    with pytest.raises(
        InvalidRecord, match=r"record 2 \(image_id 'bbbb.*8193x8192 pixels .* over the limit"
    ):
        convert(str(root), str(tmp_path / "over"))
    counts = convert(str(root), str(tmp_path / "skipped"), skip_invalid=True)
    assert counts["train_images"] == 2 and counts["rejected"] == 1
    reject = json.loads((tmp_path / "skipped" / "rejects.json").read_text())["rejects"][0]
    assert reject["image_id"] == "b" * 40 and "over the limit" in reject["reason"]
    # The probe: 32768 x 32000; the limit is configurable both ways.
    bomb.write_bytes(_claiming(real, 32768, 32000))
    capsys.readouterr()  # an earlier test's CLI left logging on its closed stderr
    code, line = _cli(main, ["--input", str(root), "--output", str(tmp_path / "probe")], capsys)
    assert code == 1 and "record 2" in line and "32768x32000" in line
    raised = convert(str(root), str(tmp_path / "raised"), max_image_pixels=32768 * 32000)
    assert raised["train_images"] == 3


def test_shard_bounds_pixels_before_decoding(tmp_path):
    from components.shard import ShardError, shard

    coco = tmp_path / "coco"
    data = write_tiny_coco(coco, "train")
    victim = coco / "images" / "train" / data["images"][0]["file_name"]
    # A whole JPEG (its scan passes the structure check) whose header claims 60000 x 60000: OpenCV
    # would try to allocate 10 GB, or stop with an assertion naming nothing.
    victim.write_bytes(_claiming(victim.read_bytes(), 60000, 60000))
    with pytest.raises(
        ShardError,
        match=rf"{victim.name} \(image id 1\): 60000x60000 pixels .* "
        r"over the limit",
    ):
        shard(str(coco), str(tmp_path / "out"), "train", 1)


def test_predict_bounds_pixels_before_decoding(tmp_path, tflite_models, capsys):
    from components.evaluate import main

    picture = tmp_path / "bomb.jpg"
    tiny = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    picture.write_bytes(_claiming(tiny, 65000, 65000))
    model = next(tflite_models.glob("*.tflite"))
    code, line = _cli(
        main,
        [
            "predict",
            "--model",
            str(model),
            "--image",
            str(picture),
            "--output",
            str(tmp_path / "out.jpg"),
        ],
        capsys,
    )
    assert code == 1 and "bomb.jpg" in line and "65000x65000" in line


def test_the_photographs_readers_bound_pixels_before_decoding(tmp_path, tflite_models):
    """evaluate's --photos (agreement and side-by-side), the web demo's still-image twin and
    tflite's --representative-photos read the photographs' headers before decoding them."""
    from components.tflite import TFLiteConversionError, _representative_photos
    from pose.evaluation import photos
    from pose.web_demo import DemoError

    folder = tmp_path / "photos"
    folder.mkdir()
    picture = folder / "bomb.jpg"
    tiny = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    picture.write_bytes(_claiming(tiny, 65000, 65000))
    claim = r"bomb\.jpg: 65000x65000 pixels .* over the limit"
    with pytest.raises(photos.PhotoError, match=claim):
        photos.read_picture(picture)
    with pytest.raises(photos.PhotoError, match=claim):
        aic = keypoints.preset("aic")
        photos.side_by_side(picture, np.zeros((14, 3)), np.zeros((14, 3)), aic, aic)
    model = next(tflite_models.glob("*fp32.tflite"))
    with pytest.raises(DemoError, match=claim):
        photos.reference_keypoints(str(model), str(picture))
    with pytest.raises(TFLiteConversionError, match=claim):
        _representative_photos(str(folder), 96)


_ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [
        f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]"
        for level in range(8)
    ]
    + ["batch_size: *i"]
)  # 9^9 = 387 million strings once expanded (the 4.8 GB)

# Runs load_config on the bomb in a process that stops itself past 1 GB of RSS (the bound),
# and prints its peak RSS: the bomb as a file and as the `config` parameter's text.
_BOMB_PROBE = """
import os, sys, threading, time
def watch():
    while True:
        if int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") > 1 << 30:
            print("over 1 GB", flush=True); os._exit(3)
        time.sleep(0.01)
threading.Thread(target=watch, daemon=True).start()
from pose.training.config import ConfigError, load_config
for source in sys.argv[1:]:
    try:
        load_config(source)
        print("accepted"); sys.exit(2)
    except ConfigError as error:
        print("refused:", str(error).splitlines()[0][:300])
# VmHWM: this process's own peak (ru_maxrss would carry the parent's across exec)
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print("peak_rss_mb", int(peak) // 1024)
"""


def test_config_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_ALIAS_BOMB)
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_PROBE, str(bomb), _ALIAS_BOMB],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, (result.stdout, result.stderr[-2000:])
    assert lines[0].startswith(f"refused: config file {bomb}: line 1: YAML anchor &a")
    assert lines[1].startswith("refused: config text: line 1: YAML anchor &a")
    assert int(lines[2].split()[1]) < 1024


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch_size: 100000000", r"'batch_size' = 100000000: must be at most 4,096"),
        (
            "batch_size: 4096\ninput_size: 1024",
            r"'batch_size' = 4096: a batch of 4096 x 1024\^2 .* 48.0 GiB",
        ),
        ("input_size: 65536", r"'input_size' = 65536: must be at most 1,024"),
        ("shuffle_buffer: 100000000", r"'shuffle_buffer' = 100000000: must be at most 100,000"),
        ("stage_channels: 1000000", r"'stage_channels' = 1000000: must be at most 4,096"),
        ("batchsize: 4\nbatch_size: 8", r"'batchsize' and 'batch_size' are the same key"),
        ("batch_size: 8\nbatchsize: 4", r"'batch_size' and 'batchsize' are the same key"),
        ("base: {lr: 0.1}\n<<: {lr: 0.2}", r"line 2: YAML merge key '<<' is not accepted"),
        (
            "sigma: 1e-30",
            r"'sigma' = 1e-30: must be between half the output stride \(1 input pixels",
        ),
        ("sigma: 1000", r"'sigma' = 1000.0: must be between .* and input_size \(192\)"),
        ("x: [" + "0, " * 20000 + "]", r"more than 10,000 YAML nodes"),
        ("x: " + "[" * 20000 + "]" * 20000, r"line 1: YAML nested more than 32 deep"),
    ],
    ids=[
        "batch_size",
        "batch-bytes",
        "input_size",
        "shuffle_buffer",
        "stage_channels",
        "batchsize-first",
        "batch_size-first",
        "merge-key",
        "sigma-vanishing",
        "sigma-flat",
        "nodes",
        "depth",
    ],
)
def test_config_sizes_spellings_and_meaning_are_bounded(text, message):
    from pose.training.config import ConfigError, load_config, parse_overrides

    with pytest.raises(ConfigError, match=message):
        load_config(text)
    if "\n" not in text and not text.startswith("x:"):  # the same through a --set override
        key, value = text.split(": ")
        with pytest.raises(ConfigError, match=message.replace(r"\(192\)", "")):
            load_config(None, parse_overrides([f"{key}={value}"]))


def _files_over(folder: Path, size: int) -> list:
    return [path for path in folder.rglob("*") if path.is_file() and path.stat().st_size > size]


def test_zip_bomb_is_refused_before_writing(tmp_path):
    import zipfile

    from components.download import DownloadError, download

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        tiny = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        bundle.writestr("aic/a.jpg", tiny)
        bundle.writestr("aic/zeros.jpg", bytes(65 << 20))  # 65 MiB in ~65 KB: over the 64 MiB floor
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(
        DownloadError,
        match=r"bomb\.zip: refusing to extract: its members expand "
        r"to "
        r"more than "
        r"67,108,864 bytes \(at member 'aic/zeros\.jpg'",
    ):
        download(str(archive), str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists() and _files_over(tmp_path, 1 << 20) == []


def test_tar_gz_bomb_is_counted_while_extracting(tmp_path, monkeypatch):
    from components.download import DownloadError, download

    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        members = (("aic/a.jpg", b"\xff\xd8" + bytes(100)), ("aic/zeros.jpg", bytes(3 << 20)))
        for name, data in members:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            bundle.addfile(member, io.BytesIO(data))
    # the absolute cap, lowered for a small test
    monkeypatch.setenv("POSE_MAX_EXTRACTED_BYTES", str(1 << 20))
    with pytest.raises(
        DownloadError,
        match=r"more than 1,048,576 bytes \(at member "
        r"'aic/zeros\.jpg', "
        r"3,145,830 bytes so far\)",
    ):
        download(str(archive), str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists() and _files_over(tmp_path, 1 << 20) == []
    monkeypatch.setenv("POSE_MAX_EXTRACTED_BYTES", "lots")
    with pytest.raises(DownloadError, match=r"POSE_MAX_EXTRACTED_BYTES='lots' is not a number"):
        download(str(archive), str(tmp_path / "raw"))


@pytest.mark.parametrize(
    "source, message",
    [
        ("synthetic://99999999999", r"1 <= N <= 250,000 .*; N is 99,999,999,999"),
        ("synthetic://10?seed=-1", r"0 <= S <= 4,294,967,295; S is -1"),
        ("synthetic://10?sed=1", r"got the query 'sed=1'"),
        ("synthetic://ten", r"N and S must be whole numbers"),
    ],
    ids=["huge-n", "negative-seed", "unknown-key", "not-a-number"],
)
def test_bad_synthetic_parameters_are_one_clear_line(tmp_path, capsys, source, message):
    from components.download import main

    code, line = _cli(main, ["--source", source, "--output", str(tmp_path / "raw")], capsys)
    assert code == 1 and line.startswith(
        f"download: error: {source}: expected synthetic://N[?seed=S]"
    )
    assert re.search(message, line), line
    assert not (tmp_path / "raw").exists()


# ---------------------------------------------------------------------------------------------
# Issue 21: refused before work starts, naming the parameter
# ---------------------------------------------------------------------------------------------

_BAD_RUN_ARGUMENTS = [
    (
        {"overrides": ["batch_size=0"]},
        r"parameter overrides: overrides: key 'batch_size' = 0: must be positive",
    ),
    (
        {"overrides": ["num_keypoints=15"]},
        r"parameter config: num_keypoints 15, but .* has 14 keypoints",
    ),
    ({"params": {"num_shards": 0}}, r"num_shards=0: expected (an integer from )?1 to 32"),
    ({"params": {"num_shards": 100000}}, r"num_shards=100000: expected (an integer from )?1 to 32"),
    (
        {"params": {"tflite_variants": "fp32,fp64"}},
        r"parameter tflite_variants='fp32,fp64': .* unknown: 'fp64'",
    ),
    (
        {"params": {"export_contract": "coco"}},
        r"parameter export_contract='coco': unknown model contract",
    ),
    (
        {"source": "gs://bucket/a/../b"},
        r"parameter source='gs://bucket/a/\.\./b': a '\.\.' segment",
    ),
    (
        {"source": "synthetic://10?seed=-1"},
        r"parameter source='synthetic://10\?seed=-1': .* S is -1",
    ),
    (
        {"params": {"publish_uri": "gs://bucket//x"}},
        r"parameter publish_uri='gs://bucket//x': an empty segment",
    ),
    ({"params": {"latency_runs": 0}}, r"parameter latency_runs=0: expected a whole number >= 1"),
]
_BAD_RUN_IDS = [
    "batch_size-0",
    "num_keypoints-15",
    "num_shards-0",
    "num_shards-100000",
    "variant",
    "contract",
    "dot-dot-uri",
    "synthetic-seed",
    "empty-segment",
    "latency_runs",
]


@pytest.mark.parametrize("arguments, message", _BAD_RUN_ARGUMENTS, ids=_BAD_RUN_IDS)
def test_pipeline_run_refuses_bad_parameters_before_the_first_task(
    tmp_path, monkeypatch, arguments, message
):
    from kfp import local

    from pipeline.local import LocalRunError, run_local

    def no_run(*args, **kwargs):
        raise AssertionError(
            "the run would start"
        )  # a check that missed must not run the whole DAG here

    monkeypatch.setattr(local, "init", no_run)
    with pytest.raises(LocalRunError, match=message):
        run_local(config="experiments/tiny.yaml", pipeline_root=str(tmp_path / "runs"), **arguments)
    assert not (tmp_path / "runs").exists()  # no task started: not even the pipeline root was made


def test_publish_variant_is_best_or_one_of_the_variants_made():
    from pipeline.params import ParameterError
    from pipeline.preflight import check_arguments

    publishing = {"publish_uri": "gs://bucket/models", "tflite_variants": "fp32,int8"}
    check_arguments({**publishing, "publish_variant": "best"})  # publish chooses among those made
    check_arguments({**publishing, "publish_variant": "int8"})
    with pytest.raises(ParameterError, match=r"publish_variant='fp16': not among tflite_variants"):
        check_arguments({**publishing, "publish_variant": "fp16"})


@pytest.mark.parametrize("arguments, message", _BAD_RUN_ARGUMENTS[:4], ids=_BAD_RUN_IDS[:4])
def test_submit_refuses_bad_parameters_before_contacting_the_cluster(arguments, message):
    from pipeline.params import ParameterError
    from pipeline.submit import SubmitError, submit

    pairs = [f"{name}={value}" for name, value in arguments.get("params", {}).items()]
    if "overrides" in arguments:
        pairs.append(f"overrides={','.join(arguments['overrides'])}")
    # refused by the parameter parser or by preflight, before the cluster is contacted
    with pytest.raises((SubmitError, ParameterError), match=message):
        submit(f"http://127.0.0.1:{_closed_port()}", params=pairs)


def test_compile_refuses_a_bad_default(tmp_path, monkeypatch):
    from pipeline import preflight
    from pipeline.compile import CompileError, compile_pipeline

    defaults = preflight.default_arguments()
    monkeypatch.setattr(preflight, "default_arguments", lambda: {**defaults, "num_shards": 0})
    with pytest.raises(CompileError, match=r"default parameter num_shards=0"):
        compile_pipeline(tmp_path / "pipeline.yaml")
    assert not (tmp_path / "pipeline.yaml").exists()


def test_train_names_a_keypoint_count_the_shards_do_not_have(tmp_path, shards, capsys):
    from components.train import main

    capsys.readouterr()
    code, line = _cli(
        main,
        [
            "--config",
            str(TINY_CONFIG),
            "--set",
            "num_keypoints=15",
            "--data",
            str(shards["train"]),
            "--output",
            str(tmp_path / "model"),
        ],
        capsys,
    )
    assert code == 1 and line == (
        "train: error: config num_keypoints 15, but the shards hold 14 "
        "keypoints per "
        f"person (the keypoint set 'aic'; {shards['train']}): leave num_keypoints out"
    )
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------------------------------------
# Issue 21: one writer at a time
# ---------------------------------------------------------------------------------------------

# Holds the writer lock of argv[1] as step argv[2] would (the step's own code path), until killed.
_HOLDER = """
import sys, time
from pose.files.writer_lock import exclusive_writer
with exclusive_writer(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def _lock_held_by_another_process(path: Path, step: str):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), step],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()


def test_a_second_writer_of_an_output_is_refused_until_the_first_dies(tmp_path, capsys):
    from components.convert import main as convert_main

    root = _release_with(tmp_path, aic_record("c" * 40))
    output = tmp_path / "coco"
    with _lock_held_by_another_process(output, "convert") as holder:
        capsys.readouterr()
        code, line = _cli(convert_main, ["--input", str(root), "--output", str(output)], capsys)
        assert code == 1 and line.startswith(
            f"convert: error: {output}: another process is "
            "writing it "
            f"(convert as pid {holder.pid} on "
            f"{socket.gethostname()}, since "
        )
        assert not output.exists()
    # the holder was killed: its lock went with it
    code, line = _cli(convert_main, ["--input", str(root), "--output", str(output)], capsys)
    assert code == 0 and (output / "annotations").is_dir()


def test_two_trainings_into_one_output_are_refused(tmp_path, shards, capsys):
    from components.train import main as train_main

    output = tmp_path / "model"
    with _lock_held_by_another_process(output, "train") as holder:
        capsys.readouterr()
        code, line = _cli(
            train_main,
            [
                "--config",
                str(TINY_CONFIG),
                "--data",
                str(shards["train"]),
                "--output",
                str(output),
                "--set",
                "max_steps=1",
            ],
            capsys,
        )
        assert code == 1 and f"another process is writing it (train as pid {holder.pid} on " in line
        assert not (output / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------
# Issue 21: publish touches only its own
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def publishable(tmp_path_factory, tflite_models, shards) -> dict:
    """Evaluated models under four names (mv2_cpm_{a,b,c,d}_fp32), so that whose publish won is
    visible."""
    from components.evaluate import evaluate

    root = tmp_path_factory.mktemp("publishable")
    models = root / "models"
    models.mkdir()
    evaluation = root / "evaluation"
    (root / "no-anchors").mkdir()  # passed, not set in os.environ: that outlived the module
    evaluate(
        str(tflite_models),
        [str(shards["valid"])],
        str(evaluation),
        anchors_dir=str(root / "no-anchors"),
        latency_runs=1,
        gallery_size=1,
    )
    results = json.loads((evaluation / "results.json").read_text())
    for name in "abcd":
        folder = models / name
        folder.mkdir()
        for path in tflite_models.glob("mv2_cpm_fp32.*"):
            shutil.copyfile(path, folder / path.name.replace("mv2_cpm", f"mv2_cpm_{name}"))
        results["models"][f"mv2_cpm_{name}_fp32"] = results["models"]["mv2_cpm_fp32"]
    (evaluation / "results.json").write_text(json.dumps(results))
    return {"models": models, "evaluation": evaluation}


def _publish(publishable, name: str, destination) -> dict:
    from components.publish import publish

    evaluation = str(publishable["evaluation"])
    models = str(publishable["models"] / name)
    return publish(models, evaluation, evaluation, str(destination), "fp32")


def test_publish_never_replaces_a_file_it_did_not_write(publishable, object_store, tmp_path):
    """The user's own report.html (or results.json) where publish would write one, with no manifest
    of ours vouching for it: refused, named, nothing changed; --move-aside renames it first and the
    publish goes through; a republish over publish's own files needs no flag (on a local folder and
    in a bucket)."""
    from components.publish import PublishError, main

    bucket = f"{object_store.scheme}://{object_store.make_bucket('models')}/users"
    for destination in (str(tmp_path / "site"), bucket):
        local = not destination.startswith(object_store.scheme)
        mine = b"<html>my own report</html>"
        if local:
            (tmp_path / "site").mkdir()
            (tmp_path / "site" / "report.html").write_bytes(mine)
        else:
            object_store.put(f"{destination}/report.html", mine)
        read = (
            (lambda name: (tmp_path / "site" / name).read_bytes())
            if local
            else (lambda name, prefix=destination: object_store.get(f"{prefix}/{name}"))
        )
        with pytest.raises(PublishError) as refused:
            _publish(publishable, "a", destination)
        message = str(refused.value)
        assert f"{destination}/report.html would be replaced" in message, message
        assert "nothing was changed" in message and "--move-aside" in message
        assert read("report.html") == mine
        names = (
            sorted(p.name for p in (tmp_path / "site").iterdir())
            if local
            else object_store.names(destination)
        )
        assert [n.rsplit("/", 1)[-1] for n in names] == ["report.html"]

        evaluation = str(publishable["evaluation"])
        argv = ["--models", str(publishable["models"] / "a"), "--report", evaluation]
        argv += ["--results", evaluation, "--destination", destination, "--variant", "fp32"]
        assert main([*argv, "--move-aside"]) == 0
        assert read("report.html") != mine
        names = (
            [p.name for p in (tmp_path / "site").iterdir()]
            if local
            else [n.rsplit("/", 1)[-1] for n in object_store.names(destination)]
        )
        [aside] = [n for n in names if n.startswith("report.html.before-publish-")]
        assert read(aside) == mine
        _publish(publishable, "b", destination)  # publish's own files: replaced without a flag


def test_publish_refuses_a_backslash_in_the_destination(publishable, seaweedfs):
    """s3://pub/a\\b was written under a/b/ by the client while the manifest said a\\b, and a later
    publish to s3://pub/a/b found the files foreign: the prefix is refused before anything is written."""
    from components.publish import PublishError

    with pytest.raises(PublishError, match=r"a backslash in the prefix; use / between its parts"):
        _publish(publishable, "a", "s3://pub/a\\b")


# A published.json publish did not write for this destination: another's manifest listing the
# user's notes.txt, a JSON list, garbage.
_FOREIGN_MANIFESTS = pytest.mark.parametrize(
    "manifest",
    [
        json.dumps({"destination": "somewhere/else", "files": {"notes.txt": {"sha256": "0" * 64}}}),
        json.dumps(["notes.txt"]),
        "garbage {",
    ],
    ids=["foreign", "json-list", "garbage"],
)
_REFUSED_MANIFEST = (
    r"published.json: (was written for 'somewhere/else'|exists but is not a).*nothing was changed"
)


@_FOREIGN_MANIFESTS
def test_publish_refuses_a_foreign_or_unreadable_manifest_before_changing_anything(
    tmp_path, publishable, manifest
):
    from components.publish import MANIFEST, PublishError

    destination = tmp_path / "site"
    destination.mkdir()
    (destination / "notes.txt").write_text("the user's notes")
    (destination / MANIFEST).write_text(manifest)
    with pytest.raises(PublishError, match=_REFUSED_MANIFEST):
        _publish(publishable, "a", destination)
    assert sorted(p.name for p in destination.iterdir()) == sorted([MANIFEST, "notes.txt"])
    assert (destination / MANIFEST).read_text() == manifest


@_FOREIGN_MANIFESTS
def test_publish_refuses_a_foreign_or_unreadable_manifest_in_a_bucket(
    publishable, object_store, manifest
):
    """The same on gs:// and s3:// (the issue saw notes.txt deleted "locally and on gs://"): the
    prefix keeps exactly the user's notes.txt and the manifest, byte for byte, and no lock object."""
    from components.publish import MANIFEST, PublishError

    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/site"
    object_store.put(f"{base}/notes.txt", b"the user's notes")
    object_store.put(f"{base}/{MANIFEST}", manifest.encode())
    with pytest.raises(PublishError, match=rf"{base}/{_REFUSED_MANIFEST}"):
        _publish(publishable, "a", base)
    assert object_store.names(base) == sorted([MANIFEST, "notes.txt"])
    assert object_store.get(f"{base}/notes.txt") == b"the user's notes"
    assert object_store.get(f"{base}/{MANIFEST}") == manifest.encode()


def test_publish_removes_only_what_it_wrote_and_never_through_a_link(tmp_path, publishable):
    from components.publish import MANIFEST

    destination = tmp_path / "site"
    _publish(publishable, "a", destination)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not publish's")
    (destination / "sub").symlink_to(outside)
    (destination / "notes.txt").write_text("the user's notes")
    manifest = json.loads((destination / MANIFEST).read_text())
    victim_sha = hashlib.sha256(b"not publish's").hexdigest()
    # The manifest claims both (sha256s that match their bytes): neither is publish's to delete.
    manifest["files"]["sub/victim.txt"] = {"bytes": 13, "sha256": victim_sha}
    manifest["files"]["notes.txt"] = {"bytes": 16, "sha256": "f" * 64}
    (destination / MANIFEST).write_text(json.dumps(manifest))
    _publish(publishable, "b", destination)
    assert (outside / "victim.txt").read_text() == "not publish's"
    assert (destination / "notes.txt").read_text() == "the user's notes"
    assert not (destination / "mv2_cpm_a_fp32.tflite").exists()  # publish's own stale file is gone
    assert "mv2_cpm_b_fp32.tflite" in json.loads((destination / MANIFEST).read_text())["files"]


@pytest.mark.parametrize(
    "destination",
    ["gs://models/a/../b", "gs://models//b", "s3://models/./b", "/tmp/site/../elsewhere"],
)
def test_publish_refuses_dot_dot_and_empty_segments(publishable, destination):
    from components.publish import PublishError

    with pytest.raises(PublishError, match=r"destination='.*': (a '\.\.'|an empty|a '\.') segment"):
        _publish(publishable, "a", destination)


@pytest.mark.parametrize("uri", ["gs://models/a/../b", "s3://models//b", "minio://models/./b"])
def test_download_and_train_refuse_dot_dot_and_empty_segments_on_their_own_command_lines(
    tmp_path, uri
):
    """The pre-run check refuses these for a run; a step started by hand must too (the key
    `a/../b` is a literal name to a store, not the folder above)."""
    from components.download import DownloadError, download
    from components.train import train
    from pose.training.errors import TrainError

    segment = r"(a '\.\.'|an empty|a '\.') segment"
    with pytest.raises(DownloadError, match=rf"source='{re.escape(uri)}': {segment}"):
        download(uri, str(tmp_path / "release"))
    assert not (tmp_path / "release").exists()
    with pytest.raises(TrainError, match=rf"checkpoint_uri='{re.escape(uri)}': {segment}"):
        train(str(TINY_CONFIG), [str(tmp_path)], str(tmp_path / "model"), checkpoint_uri=uri)
    assert not (tmp_path / "model").exists()


def _concurrent_publishes(publishable, destination: str, env: dict) -> list:
    import subprocess
    import sys

    evaluation = str(publishable["evaluation"])
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "components.publish",
                "--models",
                str(publishable["models"] / name),
                "--report",
                evaluation,
                "--results",
                evaluation,
                "--destination",
                destination,
                "--variant",
                "fp32",
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in "abcd"
    ]
    return [
        (process.wait(timeout=300), process.stderr.read().strip().splitlines()[-1:])
        for process in processes
    ]


def _assert_one_complete_set(outcomes, files: dict, refusal: str):
    from components.publish import MANIFEST

    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, last in outcomes:
        assert code == 0 or (code == 1 and refusal in last[0]), outcomes
    manifest = json.loads(files[MANIFEST])
    assert set(files) == {*manifest["files"], MANIFEST}  # one run's set, nothing of another's
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"], name


def test_concurrent_publishes_to_one_folder_leave_one_complete_set(tmp_path, publishable):
    destination = tmp_path / "site"
    outcomes = _concurrent_publishes(publishable, str(destination), {})
    files = {
        p.relative_to(destination).as_posix(): p.read_bytes()
        for p in destination.rglob("*")
        if p.is_file()
    }
    _assert_one_complete_set(outcomes, files, "another process is writing it (publish as pid")


def _published_files(object_store, base: str) -> dict:
    """{name: bytes} under the prefix, as a reader gets them (a gzip Content-Encoding undone)."""
    files = {}
    for name in object_store.names(base):
        data = object_store.get(f"{base}/{name}")
        if object_store.headers(f"{base}/{name}")[1] == "gzip":
            data = gzip.decompress(data)
        files[name] = data
    return files


def test_concurrent_publishes_to_one_object_prefix_leave_one_complete_set(
    publishable, object_store
):
    from components.publish import LOCK_NAME, PublishError

    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/pose"
    # A live holder's lock object (the store refuses the conditional create): refused, named.
    object_store.put(
        f"{base}/{LOCK_NAME}", json.dumps({"pid": 7, "host": "h", "since": time.time()}).encode()
    )
    with pytest.raises(
        PublishError, match=rf"{base}: another publish is writing it \(publish as pid 7 on h"
    ):
        _publish(publishable, "a", base)
    storage_env = {
        name: os.environ[name]
        for name in ("STORAGE_EMULATOR_HOST", *S3_ENVIRONMENT)
        if name in os.environ
    }
    from pose.files import storage

    storage.delete([f"{base}/{LOCK_NAME}"])
    outcomes = _concurrent_publishes(publishable, base, storage_env)
    _assert_one_complete_set(
        outcomes,
        _published_files(object_store, base),
        "another publish is writing it (publish as pid",
    )


# A publish lock taker for each round of _lock_races: says "ready", then for each round waits for
# the file go-<round> (the round's start time), takes the publish lock of the prefix argv[1] at that
# instant, and prints "held <pid>" (holding it until release-<round> exists) or its one-line refusal.
_LOCK_TAKER = """
import os, sys, time
from pathlib import Path
from components.publish import PublishError, _ObjectDestination
prefix, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
destination = _ObjectDestination(prefix)
destination.store.client  # connected before the start, so that the takers meet at the store
print("ready", flush=True)
for round in range(rounds):
    while not (folder / f"go-{round}").exists():
        time.sleep(0.02)
    time.sleep(max(0.0, float((folder / f"go-{round}").read_text()) - time.time()))
    try:
        with destination.lock():
            print("held", os.getpid(), flush=True)
            while not (folder / f"release-{round}").exists():
                time.sleep(0.02)
    except PublishError as error:
        print(error, flush=True)
"""


def _lock_races(base: str, count: int, folder: Path, before_each) -> list:
    """For each function of `before_each` (called first), `count` processes take the publish lock of
    `base` at one instant; the winner holds it until every other one has answered. Returns each
    round's [(pid, line)]."""
    import subprocess
    import sys

    takers = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCK_TAKER, base, str(folder), str(len(before_each))],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    rounds = []
    try:
        assert [t.stdout.readline().strip() for t in takers] == ["ready"] * count
        for number, prepare in enumerate(before_each):
            prepare()
            # Written aside and renamed: a taker polls for the file and must never read it empty.
            (folder / f"go-{number}.part").write_text(str(time.time() + 0.3))
            (folder / f"go-{number}.part").rename(folder / f"go-{number}")
            rounds.append([(t.pid, t.stdout.readline().strip()) for t in takers])
            (folder / f"release-{number}").touch()
        assert [t.wait(timeout=60) for t in takers] == [0] * count
        return rounds
    finally:
        for taker in takers:
            if taker.poll() is None:
                taker.kill()
                taker.wait()


def test_the_publish_lock_admits_one_of_six_simultaneous_takers(object_store, tmp_path):
    """Issue 21: the lock object was written, read back after 0.5 s and believed; two publishes could
    both hold it. Now the store decides (a create only when absent, a takeover only of the version
    read): of 6 processes at once, exactly one holds it and the others name it; of 6 taking over a
    stale lock at once, exactly one does."""
    from components.publish import LOCK_NAME, PUBLISH_LOCK_SECONDS

    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/race"
    lock = f"{base}/{LOCK_NAME}"
    dead = {"pid": 1, "host": "gone", "since": time.time() - PUBLISH_LOCK_SECONDS - 60}

    def no_lock():  # the previous round's holder releases it once it sees release-<round>
        deadline = time.monotonic() + 30
        while object_store.exists(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not object_store.exists(lock)

    def stale_lock():
        no_lock()
        object_store.put(lock, json.dumps(dead).encode())

    fresh, stale = _lock_races(base, 6, tmp_path, [no_lock, stale_lock])
    for outcomes, also_refused in (
        (fresh, None),
        (stale, f"{base}: another publish took over the stale lock object {lock} just now; "),
    ):
        winners = [pid for pid, line in outcomes if line == f"held {pid}"]
        assert len(winners) == 1, outcomes
        named = f"{base}: another publish is writing it (publish as pid {winners[0]} on "
        for pid, line in outcomes:
            assert (
                pid == winners[0]
                or line.startswith(named)
                or (also_refused and line.startswith(also_refused))
            ), outcomes
    assert not object_store.exists(lock)


def test_a_dead_publishers_lock_says_when_it_is_taken_over_and_how_to_clear_it(object_store):
    """A publisher killed with kill -9 leaves its lock object: the next publish is refused, and the
    refusal says from when the lock is stale (taken over) and that deleting it clears it now."""
    from components.publish import LOCK_NAME, PUBLISH_LOCK_SECONDS, PublishError, _ObjectDestination

    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/dead"
    lock = f"{base}/{LOCK_NAME}"
    killed = {"pid": 4242, "host": "pod-x", "since": time.time() - 600}
    object_store.put(lock, json.dumps(killed).encode())
    with pytest.raises(PublishError) as refused, _ObjectDestination(base).lock():
        pass
    message = str(refused.value)
    left = PUBLISH_LOCK_SECONDS - 600
    seconds = int(re.search(r"stale from \S+ \(in (\d+) s\)", message).group(1))
    assert left - 5 <= seconds <= left, message
    assert f"or delete {lock} to take it now" in message, message
    assert "\n" not in message


def test_a_publish_releases_only_its_own_lock(object_store, caplog):
    """A publish whose lock was taken over (it ran past PUBLISH_LOCK_SECONDS) leaves the new
    holder's lock in place, and says so."""
    from components.publish import LOCK_NAME, _ObjectDestination

    base = f"{object_store.scheme}://{object_store.make_bucket('models')}/own"
    successor = json.dumps({"pid": 9, "host": "next", "since": time.time()}).encode()
    with caplog.at_level("WARNING", logger="publish"), _ObjectDestination(base).lock():
        object_store.put(f"{base}/{LOCK_NAME}", successor)
    assert object_store.get(f"{base}/{LOCK_NAME}") == successor
    assert "no longer this publish's lock (taken over as stale?): left in place" in caplog.text


def test_conditional_writes_are_decided_by_the_store(object_store):
    """pose.files.storage's create-if-absent, replace-if and delete-if against the real servers:
    fake-gcs-server honours ifGenerationMatch on uploads, SeaweedFS 4.48 If-None-Match / If-Match
    on PutObject and If-Match on DeleteObject (412 PreconditionFailed)."""
    from pose.files import storage

    uri = f"{object_store.scheme}://{object_store.make_bucket('models')}/conditional/lock"
    first = storage.create_if_absent(uri, b"one")
    assert first is not None
    assert storage.create_if_absent(uri, b"two") is None
    assert storage.read_versioned(uri) == (b"one", first)
    second = storage.replace_if(uri, b"three", first)
    assert second not in (None, first)
    assert storage.replace_if(uri, b"four", first) is None  # a version no longer there
    assert object_store.get(uri) == b"three"
    if object_store.scheme == "s3":  # fake-gcs-server ignores a delete's condition (its issue 1282)
        assert not storage.delete_if(uri, first)
        assert object_store.get(uri) == b"three"
    assert storage.delete_if(uri, second)
    assert not object_store.exists(uri)
    assert storage.read_versioned(uri) is None
    assert not storage.delete_if(uri, second)
    assert storage.replace_if(uri, b"five", second) is None
    assert not object_store.exists(uri)


# ---------------------------------------------------------------------------------------------
# Issue 21: one training per bucket prefix (--checkpoint-uri)
# ---------------------------------------------------------------------------------------------

# A training's hold on a checkpoint prefix in another process: takes it for the output argv[2],
# says "held", holds it until a line arrives on stdin, then releases it.
_TRAINING_LOCK_HOLDER = """
import sys
from pose.files.remote_checkpoints import single_writer
with single_writer(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _train_into(shards, output: Path, uri: str, steps: int, capsys) -> tuple[int, str]:
    """The train CLI in-process on the tiny config for `steps` steps, a checkpoint at each;
    returns (exit code, stderr)."""
    from components.train import main as train_main

    capsys.readouterr()
    code = train_main(
        [
            *("--config", str(TINY_CONFIG), "--data", str(shards["train"])),
            *("--output", str(output), "--checkpoint-uri", uri),
            *("--set", f"max_steps={steps}", "--set", "checkpoint_every=1"),
            *("--set", "summary_every=1000", "--set", "pred_image_on_tensorboard=false"),
        ]
    )
    return code, capsys.readouterr().err


def _checkpoint_names(object_store, uri: str) -> list[str]:
    return [n for n in object_store.names(uri) if n.startswith("ckpt-") or n == "checkpoint.json"]


def test_two_trainings_with_one_checkpoint_uri_are_refused_until_the_first_ends(
    tmp_path, shards, object_store, capsys, cli_logging
):
    """Issue 21: two trainings with different outputs and one checkpoint_uri both wrote and pruned
    its prefix. Now the first holds the lock object <checkpoint_uri>/.train.lock: a second
    components.train stops before building a model, in one line naming the prefix and the holder;
    once the holder has released it, a training proceeds (and releases it in turn)."""
    import subprocess
    import sys

    from pose.files.remote_checkpoints import LOCK

    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/run-7"
    holder = subprocess.Popen(
        [sys.executable, "-c", _TRAINING_LOCK_HOLDER, uri, str(tmp_path / "first")],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _train_into(shards, tmp_path / "second", uri, 2, capsys)
        line = err.strip().splitlines()[-1]
        assert code == 1 and line.startswith(
            f"train: error: {uri}: another training is writing it (train as pid {holder.pid} on "
            f"{socket.gethostname()}, since "
        ), err[-3000:]
        assert (
            f", owner {tmp_path / 'first'}; lock object {uri}/{LOCK}); wait for it to end (one "
            "that died is taken over 300 s after its last renewal), or give this training its own "
            "checkpoint_uri"
        ) in line
        assert not (tmp_path / "second" / "checkpoints").exists()
        assert _checkpoint_names(object_store, uri) == []
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not object_store.exists(f"{uri}/{LOCK}")  # released by its holder
    code, err = _train_into(shards, tmp_path / "second", uri, 2, capsys)
    assert code == 0, err[-3000:]
    assert json.loads(object_store.get(f"{uri}/checkpoint.json"))["step"] == 2
    assert not object_store.exists(f"{uri}/{LOCK}")  # released at the end of training


def test_a_live_trainings_checkpoint_lock_refuses_and_a_dead_ones_is_taken_over(
    tmp_path, shards, object_store, capsys, cli_logging
):
    """Lock objects written as another training's would be: renewed just now (live: refused,
    named), then renewed longer than LOCK_STALE_SECONDS ago (its holder died: taken over, with a
    warning; the training runs and releases the lock at its end)."""
    from pose.files.remote_checkpoints import LOCK, LOCK_STALE_SECONDS

    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/run-8"
    lock = f"{uri}/{LOCK}"
    elsewhere = {"step": "train", "pid": 7, "host": "pod-a", "owner": "/runs/a/model"}
    now = time.time()
    object_store.put(lock, json.dumps({**elsewhere, "since": now - 600, "renewed": now}).encode())
    code, err = _train_into(shards, tmp_path / "model", uri, 2, capsys)
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        f"train: error: {uri}: another training is writing it (train as pid 7 on pod-a, since "
    ), err[-3000:]
    assert _checkpoint_names(object_store, uri) == []

    dead = {**elsewhere, "since": now - 3600, "renewed": now - LOCK_STALE_SECONDS - 60}
    object_store.put(lock, json.dumps(dead).encode())
    code, err = _train_into(shards, tmp_path / "model", uri, 2, capsys)
    assert code == 0, err[-3000:]
    assert (
        f"{lock}: a lock " in err and "(stale after 300 s: its holder died; train as pid 7" in err
    )
    assert json.loads(object_store.get(f"{uri}/checkpoint.json"))["step"] == 2
    assert not object_store.exists(lock)


def test_a_training_lock_is_renewed_taken_over_by_its_own_retry_and_lost_loudly(
    tmp_path, object_store, caplog, monkeypatch
):
    """The lock's rules without a training (pose.files.object_lock through
    remote_checkpoints.single_writer): the holder's heartbeat renews it; an earlier attempt of the
    same training (same output path: an Argo retry of one KFP task) is taken over at once, however
    fresh; the attempt that lost it cannot write (confirm) and leaves its successor's lock in
    place; a training of another output is refused; a failing training releases its lock."""
    from pose.files import remote_checkpoints
    from pose.files.object_lock import LockBusy, LockLost

    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/run-9"
    lock = f"{uri}/{remote_checkpoints.LOCK}"
    output = str(tmp_path / "model")
    caplog.set_level("WARNING", logger="train")
    monkeypatch.setattr(remote_checkpoints, "LOCK_HEARTBEAT_SECONDS", 0.05)  # not 30 s
    with remote_checkpoints.single_writer(uri, output) as beating:
        taken = json.loads(object_store.get(lock))
        assert taken["owner"] == output and taken["step"] == "train"
        deadline = time.monotonic() + 60
        while json.loads(object_store.get(lock))["renewed"] == taken["renewed"]:
            assert time.monotonic() < deadline, "the holder never renewed its lock"
            time.sleep(0.05)
        beating.confirm()  # still its own after renewals
    assert not object_store.exists(lock)
    monkeypatch.undo()  # renewals every 30 s again: none races the takeover below

    first = remote_checkpoints.single_writer(uri, output)
    held = first.__enter__()
    with remote_checkpoints.single_writer(uri, output) as retry:  # the same output: a retry
        assert json.loads(object_store.get(lock))["nonce"] == retry.nonce
        assert "held by an earlier attempt of this same training" in caplog.text
        with pytest.raises(LockLost, match=rf"{uri}: this training no longer holds the lock "):
            held.confirm()
        first.__exit__(None, None, None)  # the lost attempt's release leaves it in place
        assert json.loads(object_store.get(lock))["nonce"] == retry.nonce
        with (
            pytest.raises(LockBusy, match=rf"{uri}: another training is writing it "),
            remote_checkpoints.single_writer(uri, str(tmp_path / "other")),
        ):
            pass
    assert not object_store.exists(lock)

    with (
        pytest.raises(RuntimeError, match="training failed"),
        remote_checkpoints.single_writer(uri, output),
    ):
        raise RuntimeError("training failed")
    assert not object_store.exists(lock)


# ---------------------------------------------------------------------------------------------
# Issue 21: claims are checked
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claim, message",
    [
        ({"output_stride": 4}, r"says output_stride 4, but the model has 2 "),
        ({"num_keypoints": 17}, r"says num_keypoints 17, but the model has 14 "),
        ({"output_size": 16}, r"says output_size 16, but the model has 32 "),
    ],
    ids=["stride", "keypoints", "heatmap-size"],
)
def test_evaluate_checks_a_models_json_against_the_model(tmp_path, tflite_models, claim, message):
    from components.evaluate import EvaluationError, open_model

    models = tmp_path / "models"
    shutil.copytree(tflite_models, models)
    meta = models / "mv2_cpm_fp32.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **claim}))
    with pytest.raises(
        EvaluationError, match=rf"mv2_cpm_fp32\.tflite: mv2_cpm_fp32\.json {message}"
    ):
        open_model(models / "mv2_cpm_fp32.tflite")


@pytest.mark.parametrize("claimed", ["aic", "seed"])
def test_evaluate_checks_a_claimed_contract_against_what_the_model_does(tmp_path, claimed):
    """Issue 21: the seed's CPM under a .json claiming contract `aic` scored 0.0 with no warning.
    One run per contract on a rendered figure with known keypoints tells the contract the model
    follows; a claim that another contract fits clearly better stops evaluate, naming both."""
    from components.evaluate import EvaluationError, open_model
    from pose.data import synthetic
    from pose.evaluation import contract_check
    from pose.models import metadata

    _, persons = synthetic.render_image(np.random.default_rng(contract_check.FIGURE_SEED))
    # one figure, every joint in the picture and visible: a fair test of every channel
    assert len(persons) == 1 and persons[0]["keypoints"][2::3] == [1] * 14
    model = tmp_path / "cpm.tflite"
    shutil.copyfile(REPO / "anchors" / "pefm-cpm-192.tflite", model)
    seed_metadata = metadata.seed_release(REPO / "anchors" / "pefm-cpm-192.tflite")
    metadata.ModelMetadata.build(
        "mv2_cpm",
        seed_metadata.input_size,
        seed_metadata.output_size,
        seed_metadata.num_keypoints,
        claimed,
        seed_metadata.keypoint_set,
        output_name=seed_metadata.output_name,
        **metadata.contract_fields(claimed, seed_metadata.keypoint_set),
    ).write(metadata.path_for(model))
    if claimed == "aic":
        with pytest.raises(
            EvaluationError,
            match=r"cpm\.tflite: cpm\.json says contract 'aic', but the model follows 'seed': on "
            r"a rendered figure with known keypoints it finds 100% of the joints fed as 'seed' "
            r"and 0% as 'aic' \(PCK@0\.2\); write contract 'seed' in cpm\.json",
        ):
            open_model(model)
    else:
        assert open_model(model)["contract"]["name"] == "seed"


def test_a_file_without_json_must_be_a_seed_release(tmp_path, tflite_models):
    from components.evaluate import EvaluationError, open_model, seed_release_checksums

    known = set(seed_release_checksums().values())
    assert known == {"pefm-cpm-192.tflite", "pefm-hourglass-192.tflite"}
    lone = tmp_path / "lone.tflite"
    shutil.copyfile(tflite_models / "mv2_cpm_fp32.tflite", lone)
    with pytest.raises(
        EvaluationError,
        match=r"lone\.tflite: no lone\.json beside it, and its sha256 [0-9a-f]{64} "
        r"is none of the seed's released files",
    ):
        open_model(lone)
    # the probe: the seed's file (shipped in anchors/) with 4 KB of flipped bytes
    seed = REPO / "anchors" / "pefm-cpm-192.tflite"
    data = bytearray(seed.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    flipped = tmp_path / "pefm-cpm-192.tflite"
    flipped.write_bytes(bytes(data))
    with pytest.raises(EvaluationError, match="none of the seed's released files"):
        open_model(flipped)
    assert open_model(seed)["contract"]["name"] == "seed"


def test_a_slow_runtime_does_not_stretch_evaluates_latency_measurement(monkeypatch):
    """Full int8 on LiteRT's builtin kernels with two threads took 2.5 s an invoke on the loaded 2-core
    machine: 55 invokes per measurement were minutes of the main job. Each measurement is time-boxed,
    keeps at least MIN_TIMED_RUNS runs, and says how many it timed."""
    from components import evaluate
    from pose.models import tflite_runtime

    seed_file = REPO / "anchors" / "pefm-hourglass-192.tflite"
    boxed = tflite_runtime.latency(seed_file, 1, runs=50, max_seconds=0)
    assert boxed["runs"] == tflite_runtime.MIN_TIMED_RUNS
    assert tflite_runtime.latency(seed_file, 1, runs=7)["runs"] == 7  # no box: every run asked for
    monkeypatch.setattr(evaluate, "LATENCY_SECONDS", 0.0)
    measured = evaluate._speed_and_size(seed_file, 50)["latency_by_runtime"]
    assert {m["runs"] for by_threads in measured.values() for m in by_threads.values()} == {
        tflite_runtime.MIN_TIMED_RUNS
    }
