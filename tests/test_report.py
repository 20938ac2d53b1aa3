"""The HTML report (pose.evaluation.report.render) on a results dict built from results.py's schema:
fast, no model is trained or run."""

import re
from html.parser import HTMLParser

from pose.evaluation import report

JOINTS = ["nose", "left_shoulder", "right_shoulder", "left_wrist"]


def _latency(ms):
    one = {"threads": 1, "runs": 5, "runtime": "xnnpack", "median_ms": ms, "p90_ms": ms * 1.1}
    return {"1": one, "all": {**one, "threads": 2}, "runtime": "xnnpack"}


def _model(pck, per_joint, ms, **extra):
    return {
        "file": "m.tflite",
        "metadata": {},
        "pckh": pck,
        "pck_name": "PCK@0.2",
        "joints_scored": len(per_joint),
        "pckh_per_joint": per_joint,
        "ap": 0.5,
        "ap50": 0.7,
        "ap75": 0.4,
        "ar": 0.6,
        "size_bytes": 2_000_000,
        "latency": _latency(ms),
        "latency_by_runtime": {},
        **extra,
    }


def _picture(name, agreement, person_size, side, not_judged=None):
    return {
        "file": name,
        "reference_keypoints": [[0.0, 0.0, 0.9]] * 14,
        "person_size": person_size,
        "picture_side": side,
        "not_judged": not_judged,
        "models": {
            "mv2_cpm_fp32": {
                "keypoints": [],
                "agreement": agreement,
                "agreement_found": agreement,
                "joints_compared": 12,
            }
        },
    }


def results(source="synthetic://200", synthetic=True, photos=True):
    per = {"nose": 0.85, "left_shoulder": 0.9, "right_shoulder": 0.95, "left_wrist": 0.88}
    seed_per = {"nose": None, "left_shoulder": 0.93, "right_shoulder": 0.97, "left_wrist": 0.82}
    blaze_per = dict.fromkeys(JOINTS, 0.96)
    shards = [
        "/tmp/runs/x/for-loop-2-iteration-0/shard-op-2/shards",
        "/home/me/runs/x/for-loop-2-iteration-1/shard-op-2/shards",
    ]
    return {
        "settings": {
            "models_dir": "/work/runs/tflite-op/tflite_models",
            "data_dirs": shards,
            "anchors_dir": "/work/main/anchors",
            "refine": "dark",
            "flip_test": True,
            "latency_runs": 5,
            "all_threads": 2,
            "num_people": 42,
            "gallery_model": "mv2_cpm_fp32",
            "keypoint_set": {"name": "coco", "keypoints": JOINTS},
            "pck_name": "PCK@0.2",
            "data": {
                "source": source,
                "synthetic": synthetic,
                "folders": ["for-loop-2-iteration-0/shard-op-2/shards"],
                "split": "valid",
                "keypoint_set": "coco",
                "num_examples": 42,
            },
        },
        "models": {
            "mv2_cpm_fp32": _model(0.9, per, 1.6, vs_seed=None),
            "mv2_cpm_int8": _model(0.89, {**per, "nose": 0.84}, 2.0, vs_seed=None),
        },
        "anchors": {
            "pefm-cpm-192": {
                **_model(0.946, seed_per, 29.9),
                "file": "/work/main/anchors/pefm-cpm-192.tflite",
                "release": {"source": "seed", "title": "the seed's pefm-cpm-192"},
            },
            "blazepose-full-256": {
                **_model(0.96, blaze_per, 13.6),
                "release": {"source": "blazepose", "title": "BlazePose GHUM full"},
            },
        },
        "photos": {
            "folder": "/work/main/photos",
            "reference": "pefm-cpm-192",
            "threshold": 0.2,
            "box": "the box",
            "found_score": 0.1,
            "drawn_model": "mv2_cpm_fp32",
            "pictures": [
                _picture("big.jpg", 0.6, 400.0, 512),
                _picture("tiny.jpg", 0.0, 40.0, 1024, "the person spans 4% of the picture"),
            ],
            "agreement": {"mv2_cpm_fp32": 0.6},
            "agreement_found": {"mv2_cpm_fp32": 0.6},
            "joints_compared": {"mv2_cpm_fp32": 12},
        }
        if photos
        else None,
    }


PANELS = [
    {"file": name, "agreement": a, "agreement_found": a, "joints_compared": 12, "uri": "data:x"}
    for name, a in (("big.jpg", 0.6), ("tiny.jpg", 0.0))
]


def _page(**kwargs):
    return report.render(results(**kwargs), ["data:image/jpeg;base64,AAAA"], PANELS)


def _text(page):
    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def test_the_top_names_the_validation_set_and_says_rendered_when_synthetic():
    page = _page()
    top = _text(page[: page.index("<h2>")])
    assert "synthetic://200" in top and "42 people" in top
    assert "rendered figures, not photographs" in top


def test_the_top_names_the_users_data_and_the_shards_when_the_source_is_unknown():
    top = _text(_page(source="gs://bucket/my-people", synthetic=False).split("<h2>")[0])
    assert "gs://bucket/my-people" in top and "rendered" not in top
    unknown = _text(_page(source=None, synthetic=False).split("<h2>")[0])
    assert "the validation split of for-loop-2-iteration-0/shard-op-2/shards, 42 people" in unknown


def test_no_machine_path_appears_in_the_page():
    for page in (_page(), _page(source=None, synthetic=False)):
        outside_images = re.sub(r'src="data:[^"]*"', "", page)
        assert not re.search(r"/tmp/|/home/|/work/|C:\\", outside_images)
    old = results()
    del old["settings"]["data"]  # a results.json written before settings.data
    page = report.render(old, [], [])
    assert not re.search(r"/tmp/|/home/|/work/|C:\\", page)
    assert "for-loop-2-iteration-1/shard-op-2/shards" in page


def test_per_joint_chart_holds_ours_and_the_seeds_bars_from_a_floor_above_zero():
    page = _page()
    bars = re.findall(r'<span class="(bar[^"]*)" data-model="([^"]*)" data-joint="([^"]*)"', page)
    for joint in JOINTS:
        models = {model for _, model, j in bars if j == joint}
        assert {"ours: mv2_cpm_fp32", "seed: pefm-cpm-192"} <= models
        assert "blazepose: blazepose-full-256" in models
    assert any(css == "bar" for css, _, _ in bars)  # ours, as test_evaluate reads it
    assert "the axis from 80 % (not 0" in _text(page)  # all values above 0.8
    # the other variant as numbers
    assert re.search(r"<td>mv2_cpm_int8</td><td>84\.0</td>", page)


def test_accuracy_latency_plot_has_a_point_per_model_including_anchors():
    page = _page()
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    points = re.findall(r'<g class="point" data-model="([^"]*)"', svg)
    assert sorted(points) == sorted(
        [
            "mv2_cpm_fp32",
            "mv2_cpm_int8",
            "seed: pefm-cpm-192",
            "blazepose: blazepose-full-256",
        ]
    )
    assert "latency at 1 thread (ms)" in svg and "PCK@0.2" in svg


def test_a_too_small_photograph_is_marked_and_left_out_of_the_mean():
    page = _page()
    text = _text(page)
    assert "tiny.jpg: not judged: the person spans 4% of the picture" in text
    assert 'class="not-judged"' in page
    # mean over big.jpg alone (0.60), not (0.6 + 0.0) / 2
    assert re.search(r"<td>mv2_cpm_fp32</td><td>0\.60 \(12 joints\)</td>", page)
    assert "1 judged" in text


def test_photos_not_judged_rule():
    import numpy as np

    from pose.evaluation import photos

    found = np.array([[0.0, 0.0, 0.9]] * 14)
    assert photos.not_judged(found, 300.0, 512) is None
    assert "too small" in photos.not_judged(found, 60.0, 512)
    few = found.copy()
    few[3:, 2] = 0.0
    assert "finds 3 joints" in photos.not_judged(few, 300.0, 512)
