"""The AI Challenger keypoint release as its archives extract, and the seed's copy of it.

Where its files lie and how it codes visibility; its joints are the `aic` keypoint set
(pose.data.keypoints).
"""

# split -> (release folder, annotation file, image folder). convert finds it at any depth;
# synthetic:// renders it; download recognises its image folders.
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
