"""The real photographs (photos/, pose.evaluation.photos): their notes, and the agreement
measure on the seed's CPM."""

import numpy as np
import pytest

from pose.evaluation import photos
from tests.conftest import ANCHORS


def test_every_photograph_has_its_source_note():
    notes = (photos.DEFAULT_FOLDER / "SOURCE.md").read_text()
    pictures = photos.find(photos.DEFAULT_FOLDER)
    assert len(pictures) >= 5  # issue 22: at least five
    for picture in pictures:
        section = notes.split(f"## {picture.name}\n", 1)
        assert len(section) == 2, f"photos/SOURCE.md has no section for {picture.name}"
        text = section[1].split("\n## ", 1)[0]
        assert "Licence: public domain" in text or "Licence: CC0" in text, picture.name


def test_agreement_is_pck_of_the_reference_persons_size():
    reference = np.array([[0.0, 0.0]] * 7 + [[0.0, 100.0]] * 7)  # a person 100 pixels tall
    assert photos.person_size(reference) == 100.0
    assert photos.agreement(reference, reference) == 1.0
    moved = reference.copy()
    moved[:7, 0] += 19.0  # within 0.2 x 100 pixels
    moved[7:, 0] += 21.0  # beyond
    assert photos.agreement(moved, reference) == 0.5
    # agreement_found leaves out the joints the reference does not find (score < FOUND_SCORE), and
    # sizes the person by those it finds: here seven joints 50 pixels tall
    found = np.array([[0.0, 0.0, 0.5]] * 4 + [[0.0, 50.0, 0.5]] * 3 + [[300.0, 300.0, 0.0]] * 7)
    within = found.copy()
    within[:7, 0] += 9.0  # within 0.2 x 50 pixels
    assert photos.agreement(within, found, min_score=photos.FOUND_SCORE) == 1.0
    within[:7, 0] += 2.0  # 11 pixels: beyond 0.2 x 50, though within 0.2 x the 14 joints' box
    assert photos.agreement(within, found, min_score=photos.FOUND_SCORE) == 0.0
    assert photos.agreement(within[:, :2], found) > 0.0


def test_the_seeds_cpm_agrees_with_itself_on_every_photograph():
    """The measurement path end to end on the real files: the seed's CPM as 'ours' lands on its own keypoints."""
    from components.evaluate import open_model

    if not (ANCHORS / "pefm-cpm-192.tflite").is_file():
        pytest.skip(f"no seed CPM in {ANCHORS}")
    seed = open_model(ANCHORS / "pefm-cpm-192.tflite")
    section, panels = photos.evaluate(
        {"copy": seed}, "pefm-cpm-192", seed, photos.DEFAULT_FOLDER, "copy"
    )
    assert section["agreement"] == section["agreement_found"] == {"copy": 1.0}
    assert [panel["file"] for panel in panels] == [p["file"] for p in section["pictures"]]
    assert all(panel["uri"].startswith("data:image/jpeg;base64,") for panel in panels)
    with pytest.raises(photos.PhotoError, match="does not exist"):
        photos.find(photos.DEFAULT_FOLDER / "missing")
