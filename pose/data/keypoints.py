"""The AI Challenger keypoint spec, in AIC order (0-based here; the AIC documentation numbers joints from 1)."""

NAMES = (
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "head_top",
    "neck",
)
NUM_KEYPOINTS = len(NAMES)

RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST = 0, 1, 2
LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST = 3, 4, 5
RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE = 6, 7, 8
LEFT_HIP, LEFT_KNEE, LEFT_ANKLE = 9, 10, 11
HEAD_TOP, NECK = 12, 13

# Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS = ((0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11))


def _flip_permutation():
    perm = list(range(NUM_KEYPOINTS))
    for right, left in FLIP_PAIRS:
        perm[right], perm[left] = left, right
    return tuple(perm)


# FLIP_INDEX[k] is the joint that k becomes after a horizontal flip.
FLIP_INDEX = _flip_permutation()

# Limbs for drawing, 0-based.
SKELETON = (
    (HEAD_TOP, NECK),
    (NECK, RIGHT_SHOULDER),
    (RIGHT_SHOULDER, RIGHT_ELBOW),
    (RIGHT_ELBOW, RIGHT_WRIST),
    (NECK, LEFT_SHOULDER),
    (LEFT_SHOULDER, LEFT_ELBOW),
    (LEFT_ELBOW, LEFT_WRIST),
    (RIGHT_SHOULDER, RIGHT_HIP),
    (RIGHT_HIP, RIGHT_KNEE),
    (RIGHT_KNEE, RIGHT_ANKLE),
    (LEFT_SHOULDER, LEFT_HIP),
    (LEFT_HIP, LEFT_KNEE),
    (LEFT_KNEE, LEFT_ANKLE),
    (RIGHT_HIP, LEFT_HIP),
)

# OKS sigmas of the official AIC evaluation (its `delta` is 2 x sigma).
OKS_SIGMAS = (
    0.01388152,
    0.01515228,
    0.01057665,
    0.01417709,
    0.01497891,
    0.01402144,
    0.03909642,
    0.03686941,
    0.01981803,
    0.03843971,
    0.03412318,
    0.02415081,
    0.01291456,
    0.01236173,
)

# The official AIC release as its archives extract: split -> (release folder, annotation file, image
# folder). convert finds it at any depth; synthetic:// renders it; download recognises its image folders.
AIC_LAYOUT = {
    "train": (
        "ai_challenger_keypoint_train_20170902",
        "keypoint_train_annotations_20170909.json",
        "keypoint_train_images_20170902",
    ),
    "valid": (
        "ai_challenger_keypoint_validation_20170911",
        "keypoint_validation_annotations_20170911.json",
        "keypoint_validation_images_20170911",
    ),
}

# The seed's copy of the release (COCO files, as its training code reads them): split -> (annotation
# file, image folder), found at any depth by convert.
SEED_LAYOUT = {
    "train": ("ai_challenger_train.json", "train"),
    "valid": ("ai_challenger_valid.json", "valid"),
}

# AIC visibility codes: 1 visible, 2 occluded, 3 unlabelled; COCO's: 2 visible, 1 occluded, 0 unlabelled.
AIC_VISIBILITY_CODES = (1, 2, 3)
AIC_TO_COCO_VISIBILITY = {1: 2, 2: 1, 3: 0}
COCO_TO_AIC_VISIBILITY = {coco: aic for aic, coco in AIC_TO_COCO_VISIBILITY.items()}

COCO_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(NAMES),
    # COCO skeletons count joints from 1.
    "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
}
