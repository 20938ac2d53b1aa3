"""The official AI Challenger release: a JSON list of {image_id, url, keypoint_annotations: {humanK:
[x, y, v] * 14}, human_annotations: {humanK: [x1, y1, x2, y2]}}, v in AIC codes (1 visible, 2
occluded, 3 unlabelled), images in the folder beside it named <image_id>.jpg. Its joints are the
`aic` keypoint set."""

from pose.data import aic_release
from pose.data.sources.checks import (
    Bad,
    ConvertError,
    Person,
    Record,
    check_box,
    check_keypoints,
    check_plain_name,
    labelled_joints,
    load_json,
)

_TO_COCO = aic_release.AIC_TO_COCO_VISIBILITY


def read_records(source, keypoint_set, min_keypoints: int, skipped: dict):
    """Yields (index, image_id, Record or Bad); people with fewer than min_keypoints labelled joints
    are left out and counted in skipped["too_few_keypoints"]."""
    data = load_json(source.annotations)
    if not isinstance(data, list):
        raise ConvertError(
            f"{source.annotations}: expected a JSON list of records, got a {type(data).__name__}"
        )
    images = str(source.images)  # f-strings: pathlib would cost more than the checks, 200,000 times
    for index in range(len(data)):
        # Dropping each input record once read keeps the peak near one copy of the data set.
        record, data[index] = data[index], None
        image_id = record.get("image_id") if isinstance(record, dict) else None
        try:
            yield (
                index,
                image_id,
                _parse(index, record, images, keypoint_set.names, min_keypoints, skipped),
            )
        except Bad as bad:
            yield index, image_id, bad


def _parse(index, record, images: str, names, min_keypoints, skipped) -> Record:
    if not isinstance(record, dict):
        raise Bad(f"expected a JSON object, got a {type(record).__name__}")
    image_id = record.get("image_id")
    if not isinstance(image_id, str) or not image_id:
        raise Bad("no image_id string")
    check_plain_name(image_id)
    keypoints, boxes = record.get("keypoint_annotations"), record.get("human_annotations")
    for field, value in (("keypoint_annotations", keypoints), ("human_annotations", boxes)):
        if not isinstance(value, dict):
            raise Bad(f"{field} is missing or not an object")
    if keypoints.keys() != boxes.keys():
        if keypoints.keys() - boxes.keys():
            raise Bad(
                "has keypoints but no box in human_annotations",
                min(keypoints.keys() - boxes.keys()),
            )
        raise Bad(
            "has a box but no keypoints in keypoint_annotations",
            min(boxes.keys() - keypoints.keys()),
        )
    people = []
    for human in keypoints:
        values = list(
            check_keypoints(keypoints[human], names, aic_release.AIC_VISIBILITY_CODES, human)
        )
        values[2::3] = map(_TO_COCO.__getitem__, values[2::3])
        box = check_box(boxes[human], human)
        if labelled_joints(values) < min_keypoints:
            skipped["too_few_keypoints"] += 1
            continue
        people.append(Person(human, values, box))
    return Record(index, image_id, f"{images}/{image_id}.jpg", f"{image_id}.jpg", people)
