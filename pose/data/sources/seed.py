"""The seed project's copy of the AI Challenger release: COCO-format files (COCO visibility, xywh
boxes) of the `aic` keypoint set, ai_challenger_{train,valid}.json beside train/ and valid/, whose
file names carry a folder prefix (the image is the name's last part in the folder beside)."""

from pose.data import keypoints as kp
from pose.data.sources import coco


def read_records(source, keypoint_set, min_keypoints: int, skipped: dict):
    """Yields (index, image_id, Record or Bad), as pose.data.sources.coco does."""
    loaded = coco.CocoFile(source.annotations, keypoint_set=kp.default())
    return coco.read_records(loaded, source, keypoint_set, min_keypoints, skipped, flat=True)
