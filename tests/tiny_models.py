"""A few-kilobyte stand-in for the CPM, for tests that need a model but not a trained one."""

import json
from pathlib import Path


def build_tiny_pose_model(input_size: int = 64, num_keypoints: int = 14, name: str = "mv2_cpm"):
    """Conv net with two stages of [B, S/2, S/2, K] heatmaps, named like the CPM's outputs."""
    import keras
    from keras import layers

    image = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    x = layers.BatchNormalization()(x)
    outputs = []
    for stage in range(2):
        x = layers.Conv2D(num_keypoints, 3, padding="same", name=f"stage_{stage}_conv")(x)
        outputs.append(layers.Activation("sigmoid", name=f"stage_{stage}_out")(x))
    return keras.Model(image, outputs, name=name)


def save_as_train_output(
    model, folder: Path, model_name: str = "mv2_cpm", keypoint_set=None
) -> Path:
    """Writes the train step's layout (model.keras, train_metadata.json) for `model`; its keypoint
    set is `keypoint_set` (a KeypointSet), else the default set of a record that names none."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    size = model.input_shape[1]
    (folder / "train_metadata.json").write_text(
        json.dumps(
            {
                "model": model_name,
                "input_size": size,
                "output_stride": size // model.outputs[-1].shape[1],
                "num_keypoints": model.outputs[-1].shape[-1],
            }
            | ({"keypoint_set": keypoint_set.to_json()} if keypoint_set is not None else {})
        )
    )
    return folder
