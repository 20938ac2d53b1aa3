"""The keypoint set as data (pose.data.keypoints): presets, YAML files, sets read from COCO files, the
refusals, and the rule that no other module spells joint names or sigmas."""

import re
from pathlib import Path

import numpy as np
import pytest

from pose.data import keypoints
from pose.models import contract

REPO = Path(__file__).resolve().parents[1]
AIC = keypoints.preset("aic")
COCO = keypoints.preset("coco")


@pytest.mark.parametrize("name", keypoints.preset_names())
def test_every_preset_is_a_whole_set(name):
    found = keypoints.preset(name)
    assert found.name == name
    assert len(found.sigmas) == len(found.joint_weights) == found.num_keypoints
    index = found.flip_index
    assert sorted(index) == list(range(found.num_keypoints))
    assert all(index[index[k]] == k for k in range(found.num_keypoints))  # a flip twice is no flip
    # JSON round trip: what the data set's info and the model's .json carry is the whole set
    assert keypoints.from_json(found.to_json(), "round trip") == found


def test_coco_preset_has_cocoeval_sigmas():
    from pycocotools.cocoeval import Params

    np.testing.assert_allclose(COCO.sigmas, Params(iouType="keypoints").kpt_oks_sigmas)
    assert COCO.num_keypoints == 17 and COCO.head is None and COCO.pck_name == "PCK@0.2"


def test_aic_preset_is_the_seed_contract_set():
    assert AIC.pck_name == "PCKh@0.5"
    assert [AIC.names[i] for i in AIC.head] == ["head_top", "neck"]
    assert contract.describe("seed", AIC)["channel_order"][:2] == ["head_top", "neck"]
    assert keypoints.default() is AIC


def test_seed_contract_only_for_a_set_with_the_seed_order():
    with pytest.raises(contract.ContractError, match="export_contract=seed .* 'coco' has none"):
        contract.describe("seed", COCO)
    assert contract.resolve("auto", COCO) == "aic"
    assert contract.resolve("auto", AIC) == "seed"


def _yaml(tmp_path, text: str) -> Path:
    path = tmp_path / "set.yaml"
    path.write_text(text)
    return path


SMALL = """
name: three
keypoints: [nose, left_hand, right_hand]
swap: {left_hand: right_hand, right_hand: left_hand}
skeleton: [[nose, left_hand], [nose, right_hand]]
sigmas: [0.03, 0.06, 0.06]
"""


def test_a_yaml_set_reads_like_a_preset(tmp_path):
    found = keypoints.load(str(_yaml(tmp_path, SMALL)))
    assert found.names == ("nose", "left_hand", "right_hand")
    assert found.flip_index == (0, 2, 1) and found.skeleton == ((0, 1), (0, 2))
    assert found.pck == keypoints.PCK_BOX


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("sigmas: [0.03, 0.06, 0.06]", "sigmas: [0.03, 0.06]"),
            "sigmas has 2 values for 3 keypoints",
        ),
        (
            ("[nose, left_hand, right_hand]", "[nose, nose, right_hand]"),
            "keypoint name 'nose' repeats",
        ),
        (
            ("{left_hand: right_hand, right_hand: left_hand}", "{left_hand: right_hand}"),
            "swap partners are not symmetric: 'left_hand' -> 'right_hand', but 'right_hand' -> None",
        ),
        (
            ("[nose, right_hand]]", "[nose, tail]]"),
            "skeleton edge 1 names 'tail', which is not one of",
        ),
        (("name: three", "name: three\ncolour: red"), "unknown field"),
    ],
)
def test_a_bad_yaml_set_is_refused_naming_the_file_and_the_fault(tmp_path, change, message):
    path = _yaml(tmp_path, SMALL.replace(*change))
    with pytest.raises(keypoints.KeypointSetError) as error:
        keypoints.load(str(path))
    assert str(path) in str(error.value) and message in str(error.value)


def test_unknown_preset_names_the_presets():
    with pytest.raises(keypoints.KeypointSetError, match="the presets are aic, blazepose, coco"):
        keypoints.load("cocoa")


def test_a_coco_category_names_its_set():
    # One's own 12-joint skeleton, as CVAT or Label Studio export it (COCO counts joints from 1).
    names = [
        "head",
        "neck",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
        "LeftHip",
        "RightHip",
        "tail_base",
        "tail_tip",
    ]
    category = {"name": "animal", "keypoints": names, "skeleton": [[1, 2], [2, 3], [11, 12]]}
    found = keypoints.from_coco_category(category, "export.json")
    assert found.num_keypoints == 12 and found.name == "animal"
    pairs = {(found.names[a], found.names[b]) for a, b in found.swap_pairs}
    assert pairs == {
        ("l_shoulder", "r_shoulder"),
        ("l_elbow", "r_elbow"),
        ("l_wrist", "r_wrist"),
        ("LeftHip", "RightHip"),
    }
    assert found.skeleton == ((0, 1), (1, 2), (10, 11))
    assert [found.names[i] for i in found.head] == ["head", "neck"]  # PCKh where it can
    assert found.sigmas[names.index("tail_tip")] == keypoints.FALLBACK_SIGMA
    # A file naming exactly a preset's joints is that preset, sigmas and all.
    assert keypoints.from_coco_category(COCO.coco_category(), "coco.json") is COCO


def test_a_coco_skeleton_edge_out_of_range_is_refused():
    with pytest.raises(
        keypoints.KeypointSetError, match=r"export.json: categories\[0\].skeleton edge 0"
    ):
        keypoints.from_coco_category({"keypoints": ["a", "b"], "skeleton": [[0, 1]]}, "export.json")


def test_subset_keeps_what_both_ends_keep():
    shared = COCO.shared_with(AIC)
    assert [COCO.names[i] for i, _ in shared] == [n for n in COCO.names if n in AIC.names]
    limbs = COCO.subset([i for i, _ in shared])
    assert limbs.num_keypoints == 12 and len(limbs.swap_pairs) == 6 and limbs.head is None


def test_preflight_refuses_the_seed_contract_for_another_set():
    from pipeline.params import ParameterError
    from pipeline.preflight import check_arguments

    with pytest.raises(ParameterError, match="export_contract='seed'.* 'coco'"):
        check_arguments({"keypoints": "coco", "export_contract": "seed"})
    with pytest.raises(ParameterError, match="parameter keypoints='cocoa'"):
        check_arguments({"keypoints": "cocoa"})
    with pytest.raises(ParameterError, match="parameter valid_fraction=1.5"):
        check_arguments({"valid_fraction": 1.5})
    with pytest.raises(ParameterError, match="parameter min_keypoints=18: the keypoint set 'coco'"):
        check_arguments({"keypoints": "coco", "min_keypoints": 18})
    assert check_arguments({"keypoints": "coco"})["export_contract"] == "auto"


# The renderer draws a body whose parts have names; that vocabulary sits between these two lines
# of pose/data/synthetic.py and nowhere else.
ANATOMY_BEGIN, ANATOMY_END = "BODY_PARTS = (", "# END OF ANATOMY"


def _spelled(root: Path):
    names = set()
    sigmas = set()
    for name in keypoints.preset_names():
        preset = keypoints.preset(name)
        names |= set(preset.names)
        sigmas |= {repr(s) for s in preset.sigmas if len(repr(s)) > 5}  # 0.0262 and longer
        sigmas.add(", ".join(repr(s) for s in preset.sigmas[:3]))  # a table of short ones
    any_name = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    any_sigma = "|".join(map(re.escape, sorted(sigmas)))
    quoted = re.compile(rf"""["']({any_name})["']""")
    sigma = re.compile(rf"(?<![\d.])({any_sigma})(?!\d)")
    found = []
    for folder in ("pose", "components", "pipeline", "web", "benchmarks", "scripts"):
        for path in sorted((root / folder).rglob("*")):
            if (
                path.suffix not in (".py", ".js", ".html")
                or path == root / "pose/data/keypoints.py"
            ):
                continue
            inside = False
            for number, line in enumerate(path.read_text().splitlines(), 1):
                inside = (inside or ANATOMY_BEGIN in line) and ANATOMY_END not in line
                if not inside and (quoted.search(line) or sigma.search(line)):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_module_but_the_owner_spells_joint_names_or_sigmas():
    assert _spelled(REPO) == []


def test_the_web_page_has_no_joint_list():
    for path in (REPO / "web").glob("*.js"):
        text = path.read_text()
        assert "head_top" not in text and "right_shoulder" not in text, path


def test_a_yaml_without_swap_takes_the_partners_its_names_imply():
    implied = keypoints.from_json(
        {"name": "arms", "keypoints": ["l_wrist", "r_wrist", "neck"]}, "arms"
    )
    assert implied.flip_index == (1, 0, 2)
    none = keypoints.from_json(
        {"name": "arms", "keypoints": ["l_wrist", "r_wrist"], "swap": {}}, "arms"
    )
    assert none.flip_index == (0, 1)  # an explicit empty swap: no partners
