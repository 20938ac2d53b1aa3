"""Real photographs: ours and the seed's keypoints on the pictures of the repository's photos/.

The synthetic data set scores a model on rendered figures only; these photographs (public domain or
CC0, photos/SOURCE.md) show whether it still finds people in real pictures. There is no ground truth
for them: the reference is the seed's released CPM, which was trained on the real AI Challenger
photographs.

Agreement of a model on one photograph is PCK@0.2 against that reference: the share of the joints
both name (all 14 of the `aic` set; the twelve limb joints of COCO's 17, matched by name) whose
position lies within 0.2 x the person's size of the reference's, where the person's size is
the longer side of the bounding box of the reference's keypoints counted (no box is annotated for
the pictures). A head-and-shoulders portrait leaves hips, knees and ankles outside the picture, where
the reference's heatmaps hold no peak (score < 0.1) and its "keypoints" are noise; `agreement_found`
counts only the joints the reference finds (score >= FOUND_SCORE, the score below which the demo and
`evaluate predict` draw no joint), as PCK counts only labelled joints. Both are recorded. Each model
sees a picture as the web demo's still-image mode does (`reference_keypoints`, the page's Python
twin, which the browser tests hold web/pose.js to: the picture padded (black) to a centred square,
resized bilinearly to the model's input, fed in the model's contract, decoded with
refine="quarter").
"""

from pathlib import Path

import numpy as np

from pose.data import pixels
from pose.web_demo import DemoError, model_metadata

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = REPO / "photos"
SUFFIXES = (".jpg", ".jpeg", ".png")
THRESHOLD = 0.2  # PCK@0.2 of the person's size
FOUND_SCORE = (
    0.1  # a reference joint with a lower peak is not found (agreement_found leaves it out)
)
BOX = (
    "the bounding box of the reference's joints counted (all those the two sets share, or those it "
    "finds); size = its longer side"
)
# A picture is not judged (left out of the means) when the reference finds fewer than MIN_FOUND_JOINTS
# of its joints, or when the person (person_size) spans less than MIN_PERSON_SHARE of the picture's
# longer side: every model sees the picture padded to a square and shrunk to its input (192 px), so a
# person under a quarter of the side is under ~48 px there, too small for a crop-trained model.
MIN_FOUND_JOINTS = 4
MIN_PERSON_SHARE = 0.25
OURS_COLOUR = (40, 40, 230)  # BGR red, as the report's predicted skeletons
REFERENCE_COLOUR = (230, 140, 30)  # BGR blue: the seed's


class PhotoError(ValueError):
    """A photographs folder without pictures, or a picture that cannot be read: names the file."""


def find(folder: str | Path) -> list[Path]:
    """The pictures in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoError(f"photographs folder {folder} does not exist")
    pictures = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not pictures:
        raise PhotoError(f"{folder}: no pictures ({', '.join(SUFFIXES)})")
    return pictures


def read_picture(picture: str | Path) -> np.ndarray:
    """The picture as BGR uint8 (pose.data.pixels.read_picture: its header bounded before
    decoding); PhotoError naming the file when it is too large or cannot be read."""
    try:
        return pixels.read_picture(picture)
    except (OSError, pixels.PictureTooLarge, pixels.UnreadablePicture) as error:
        raise PhotoError(str(error)) from None


def predict(model_path: str | Path, metadata: dict, picture: Path) -> np.ndarray:
    """[K, 3] (x, y, score) in the picture's pixels, in the order of the model's keypoint set."""
    try:
        found = reference_keypoints(str(model_path), str(picture), metadata)
    except DemoError as error:
        raise PhotoError(str(error)) from error
    return np.asarray(found["keypoints"], dtype=np.float64)


def person_size(reference: np.ndarray) -> float:
    """The longer side of the bounding box of the reference's keypoints (at least one pixel)."""
    extent = reference[:, :2].max(axis=0) - reference[:, :2].min(axis=0)
    return max(float(extent.max()), 1.0)


def agreement(
    points: np.ndarray,
    reference: np.ndarray,
    threshold: float = THRESHOLD,
    min_score: float | None = None,
) -> float:
    """PCK@threshold of `points` against `reference` ([14, 2+], [14, 3]): the share of joints within
    threshold x person_size of the reference's; with min_score, of the joints whose reference score is
    at least min_score (1.0 when there is none), the size then taken from those joints alone."""
    distances = np.linalg.norm(points[:, :2] - reference[:, :2], axis=1)
    counted = np.ones(len(reference), bool) if min_score is None else reference[:, 2] >= min_score
    if not counted.any():
        return 1.0
    # the person's size from the joints counted: a portrait's unfound hips and ankles are noise
    # that would stretch the box, and with it the tolerance
    size = person_size(reference[counted])
    return float(np.mean(distances[counted] <= threshold * size))


def not_judged(
    reference: np.ndarray, size: float, picture_side: int | None, found_score: float = FOUND_SCORE
) -> str | None:
    """Why a picture cannot judge a model (None: it can): the reference finds too few joints, or the
    person is too small in the picture (MIN_FOUND_JOINTS, MIN_PERSON_SHARE)."""
    found = int((np.asarray(reference)[:, 2] >= found_score).sum())
    if found < MIN_FOUND_JOINTS:
        return f"the reference finds {found} joints (fewer than {MIN_FOUND_JOINTS})"
    if picture_side and size / picture_side < MIN_PERSON_SHARE:
        return (
            f"the person spans {size / picture_side:.0%} of the picture's longer side "
            f"(under {MIN_PERSON_SHARE:.0%}): too small for the model's input"
        )
    return None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate(
    models: dict[str, dict],
    reference_name: str,
    reference: dict,
    folder: str | Path,
    drawn_model: str | None,
) -> tuple[dict, list[dict]]:
    """Runs every model of `models` ({name: {"path", "metadata"}}) and the reference on each picture.
    Returns (the results.json section, the report's side-by-side images [{file, caption, uri}] of
    `drawn_model` beside the reference)."""
    pictures = []
    panels = []
    for picture in find(folder):
        seed = predict(reference["path"], reference["metadata"], picture)
        seed_set = _keypoint_set(reference["metadata"], reference["path"])
        # the header's size: predict above has decoded and checked the picture already
        side = max(pixels.picture_size(picture.read_bytes(), str(picture)))
        size = person_size(seed)
        entry = {
            "file": picture.name,
            "reference_keypoints": seed.round(4).tolist(),
            "person_size": round(size, 1),
            "picture_side": int(side),
            "not_judged": not_judged(seed, size, side),
            "models": {},
        }
        for name, model in models.items():
            ours = predict(model["path"], model["metadata"], picture)
            shared = _keypoint_set(model["metadata"], model["path"]).shared_with(seed_set)
            if not shared:
                raise PhotoError(
                    f"{model['path']}: its keypoint set shares no joint (by name) with the "
                    f"reference {reference_name}'s: no agreement to measure"
                )
            mine, theirs = [i for i, _ in shared], [j for _, j in shared]
            entry["models"][name] = {
                "keypoints": ours.round(2).tolist(),
                "agreement": agreement(ours[mine], seed[theirs]),
                "agreement_found": agreement(ours[mine], seed[theirs], min_score=FOUND_SCORE),
                "joints_compared": len(shared),
            }
        pictures.append(entry)
        if drawn_model in models:
            panels.append(
                {
                    "file": picture.name,
                    "agreement": entry["models"][drawn_model]["agreement"],
                    "agreement_found": entry["models"][drawn_model]["agreement_found"],
                    "joints_compared": entry["models"][drawn_model]["joints_compared"],
                    "uri": side_by_side(
                        picture,
                        seed,
                        np.asarray(entry["models"][drawn_model]["keypoints"]),
                        seed_set,
                        _keypoint_set(models[drawn_model]["metadata"], models[drawn_model]["path"]),
                    ),
                }
            )
    section = {
        "folder": str(folder),
        "reference": reference_name,
        "threshold": THRESHOLD,
        "box": BOX,
        "found_score": FOUND_SCORE,
        "drawn_model": drawn_model,
        "pictures": pictures,
        **{
            key: {
                name: _mean([p["models"][name][key] for p in pictures if not p["not_judged"]])
                for name in models
            }
            for key in ("agreement", "agreement_found")
        },
        "joints_compared": {
            name: pictures[0]["models"][name]["joints_compared"] if pictures else 0
            for name in models
        },
    }
    return section, panels


def side_by_side(
    picture: Path, seed: np.ndarray, ours: np.ndarray, seed_set, our_set, height: int = 320
) -> str:
    """The picture twice, the seed's skeleton on the left, ours on the right, as a JPEG data URI."""
    import cv2

    from pose.evaluation import report

    image = read_picture(picture)
    scale = height / image.shape[0]
    image = cv2.resize(image, (round(image.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    thickness = 2
    left, right = image.copy(), image.copy()
    report.draw_skeleton(
        left,
        (seed[:, :2] + 0.5) * scale - 0.5,
        None,
        REFERENCE_COLOUR,
        seed_set.skeleton,
        thickness,
    )
    report.draw_skeleton(
        right, (ours[:, :2] + 0.5) * scale - 0.5, None, OURS_COLOUR, our_set.skeleton, thickness
    )
    gap = np.full((height, 6, 3), 255, np.uint8)
    return report.jpeg_data_uri(np.hstack([left, gap, right]))


def square_input(bgr, input_size: int) -> tuple:
    """The picture padded (black) to a centred square and resized bilinearly to input_size, as
    float32 BGR 0..255."""
    import cv2
    import numpy as np

    height, width = bgr.shape[:2]
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    padded = cv2.copyMakeBorder(
        bgr.astype(np.float32),
        top,
        side - height - top,
        left,
        side - width - left,
        cv2.BORDER_CONSTANT,
        value=0,
    )
    resized = cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return resized, {"side": side, "left": left, "top": top}


def reference_keypoints(model: str, picture: str, metadata: dict | None = None) -> dict:
    """{"order", "keypoints": [[x, y, score] x K]} in the picture's pixels, in the order of the
    model's keypoint set (its names in "order"), as the page's still-image mode makes them, and
    "scale": picture pixels per model input pixel."""
    import numpy as np

    from pose.codec import HeatmapCodec
    from pose.models import contract, tflite_runtime

    model_path = Path(model)
    values = metadata or model_metadata(model_path)
    keypoint_set = _keypoint_set(values, model_path)
    try:
        model_contract = contract.from_metadata(
            values, str(model_path.with_suffix(".json")), keypoint_set
        )
    except contract.ContractError as error:
        raise DemoError(str(error)) from error
    try:
        bgr = read_picture(picture)
    except PhotoError as error:
        raise DemoError(str(error)) from None
    size, stride = int(values["input_size"]), int(values["output_stride"])
    image, square = square_input(bgr, size)
    image = contract.model_input(image, model_contract)
    interpreter = tflite_runtime.load(model_path, num_threads=1)
    heatmaps = tflite_runtime.run(interpreter, image[None])
    in_input, scores = HeatmapCodec(size, stride, refine="quarter").decode_to_input(heatmaps)
    in_picture = (
        (in_input[0] + 0.5) * (square["side"] / size)
        - 0.5
        - np.array([square["left"], square["top"]])
    )
    channel_joint = [keypoint_set.index(name) for name in model_contract["channel_order"]]
    result = [None] * keypoint_set.num_keypoints
    for channel, joint in enumerate(channel_joint):
        result[joint] = [
            float(in_picture[channel, 0]),
            float(in_picture[channel, 1]),
            float(scores[0, channel]),
        ]
    return {"order": list(keypoint_set.names), "keypoints": result, "scale": square["side"] / size}


def _keypoint_set(values: dict, model_path):
    from pose.models import metadata

    try:
        return metadata.keypoint_set_of(values, str(Path(model_path).with_suffix(".json")))
    except metadata.MetadataError as error:
        raise DemoError(str(error)) from error
