"""download -> convert as a two-step KFP pipeline under kfp.local, on a synthetic release."""

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from pose.data import keypoints

AIC = keypoints.preset("aic")


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_download_then_convert_under_kfp_local(tmp_path):
    from kfp import dsl, local

    from pipeline.ops import convert_op, download_op

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def ingest(source: str) -> dsl.Dataset:
        raw = download_op(source=source, sha256="")
        return convert_op(raw=raw.outputs["raw"], single_person=False, skip_invalid=False).outputs[
            "coco"
        ]

    coco = ingest(source="synthetic://24?seed=3").output

    raw_dirs = list((tmp_path / "root").rglob("download-op/raw"))
    assert len(raw_dirs) == 1
    for split, aic_name in (
        ("train", "keypoint_train_annotations_20170909.json"),
        ("valid", "keypoint_validation_annotations_20170911.json"),
    ):
        aic = json.loads(next(raw_dirs[0].rglob(aic_name)).read_text())
        loaded = COCO(str(Path(coco.path) / "annotations" / f"person_keypoints_{split}.json"))
        assert len(loaded.getImgIds()) == len(aic) == coco.metadata[f"{split}_images"]
        people = sum(len(record["human_annotations"]) for record in aic)
        assert len(loaded.getAnnIds()) == people == coco.metadata[f"{split}_people"]
        assert loaded.loadCats(1)[0]["keypoints"] == list(AIC.names)
        for annotation in loaded.loadAnns(loaded.getAnnIds()):
            assert len(annotation["keypoints"]) == 3 * AIC.num_keypoints
            image = loaded.loadImgs(annotation["image_id"])[0]
            assert (Path(coco.path) / "images" / split / image["file_name"]).is_file()
    assert len(aic) == 8  # valid = max(24 // 5, 8)
