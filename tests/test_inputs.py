"""pose.data.inputs: keypoints follow every transform exactly, flips swap joints, weights, both datasets."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.shard import shard
from pose.codec import DEFAULT_SIGMA, HeatmapCodec
from pose.data import inputs, keypoints, records, shard_index
from pose.evaluation import visualize
from tests.test_shard import write_tiny_coco

AIC = keypoints.preset("aic")
FLIP_INDEX, NUM_KEYPOINTS = AIC.flip_index, AIC.num_keypoints
RIGHT_SHOULDER, LEFT_SHOULDER = AIC.index("right_shoulder"), AIC.index("left_shoulder")

SIZE, STRIDE = 64, 2
CODEC = HeatmapCodec(SIZE, STRIDE)


@pytest.fixture(scope="module")
def coco_and_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_inputs")
    coco = write_tiny_coco(root / "coco")
    for i in range(2):  # two single-shard tasks, as the ParallelFor fan-out writes them
        shard(
            str(root / "coco"),
            str(root / f"part{i}"),
            "train",
            num_shards=2,
            shard_index=i,
            crop_size=128,
        )
    return coco, [str(root / "part0"), str(root / "part1")]


def _records(dirs):
    return [
        records.parse(s, NUM_KEYPOINTS)
        for s in tf.data.TFRecordDataset(shard_index.read(dirs)["files"])
    ]


def _expected_input_points(crop_points, crop_size, scale, degrees, translation, flip):
    """Crop pixel -> input pixel, written independently of pose.data.inputs (the inverse of its warp)."""
    centred = crop_points - (crop_size - 1) / 2
    angle = math.radians(degrees)
    unrotate = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    points = centred @ unrotate.T * (scale * SIZE / crop_size)
    if flip:
        points[:, 0] = -points[:, 0]
    points = points + (SIZE - 1) / 2 + np.asarray(translation)
    return points[list(FLIP_INDEX)] if flip else points


def test_read_index_merges_shard_folders(coco_and_shards):
    coco, dirs = coco_and_shards
    index = shard_index.read(dirs)
    assert [p.rsplit("/", 1)[1] for p in index["files"]] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert index["num_examples"] == sum(index["shards"].values()) == len(_records(dirs)) == 5
    assert index["crop_size"] == 128 and index["split"] == "train"
    with pytest.raises(shard_index.ShardIndexError, match="index.json"):
        shard_index.read([dirs[0], dirs[0] + "-missing"])


@pytest.mark.parametrize("flip", [False, True])
def test_keypoint_round_trip_through_warp_heatmap_and_decoding(coco_and_shards, flip):
    coco, dirs = coco_and_shards
    people = {a["id"]: a for a in coco["annotations"]}
    scale, degrees, translation = 1.15, 17.0, (3.0, -4.5)
    checked = []
    for example in _records(dirs):
        crop = tf.io.decode_jpeg(example["image/encoded"], channels=3)
        crop_size = int(crop.shape[0])
        image, points, visibility, matrix = inputs.warp_person(
            crop,
            example["person/keypoints"],
            example["person/visibility"],
            SIZE,
            scale,
            degrees,
            translation,
            flip,
            flip_index=FLIP_INDEX,
        )
        # From the ORIGINAL COCO annotation: original -> crop (the record's transform) -> input.
        original = np.asarray(people[int(example["person/id"])]["keypoints"], np.float64).reshape(
            -1, 3
        )
        to_original = np.vstack([example["crop/to_original"].numpy(), [0, 0, 1]]).astype(np.float64)
        in_crop = (
            original[:, :2] @ np.linalg.inv(to_original)[:2, :2].T
            + np.linalg.inv(to_original)[:2, 2]
        )
        expected = _expected_input_points(in_crop, crop_size, scale, degrees, translation, flip)
        expected_visibility = original[:, 2][list(FLIP_INDEX)] if flip else original[:, 2]
        np.testing.assert_array_equal(visibility.numpy(), expected_visibility)
        weights = inputs.joint_weights(points, visibility, SIZE).numpy()
        inside = np.all((expected >= 0) & (expected <= SIZE - 1), axis=-1)
        np.testing.assert_array_equal(
            weights, (inside & (expected_visibility > 0)).astype(np.float32)
        )
        np.testing.assert_allclose(points.numpy()[weights > 0], expected[weights > 0], atol=1e-3)
        # The image moved with the points: every joint's white dot is under its transformed position
        # (write_tiny_coco draws no dots for person 90).
        for x, y in np.round(points.numpy()[weights > 0]).astype(int):
            if 0 < x < SIZE - 1 and 0 < y < SIZE - 1 and example["person/id"] != 90:
                assert image.numpy()[y - 1 : y + 2, x - 1 : x + 2].min(axis=-1).max() > 120
        # Heatmap and back, through the shared decoder, to sub-pixel accuracy at input resolution.
        maps = CODEC.encode(points, weights).numpy()
        assert maps.shape == (SIZE // STRIDE, SIZE // STRIDE, NUM_KEYPOINTS)
        assert np.all(maps[..., weights == 0] == 0)
        decoded, scores = CODEC.decode_to_input(maps[None])
        decoded = decoded[0]
        # DARK blurs the heatmap, and the blur's border handling moves peaks within ~3 sigma of the edge.
        border = 3 * DEFAULT_SIGMA
        far_from_border = weights.astype(bool) & np.all(
            (expected > border) & (expected < SIZE - 1 - border), axis=-1
        )
        checked.append(far_from_border.sum())
        error = np.linalg.norm(decoded - expected, axis=-1)[far_from_border]
        assert error.max() < 0.3, error
        np.testing.assert_allclose(scores[0][far_from_border], 1.0, atol=0.1)
    assert sum(checked) >= 10, checked


def test_flip_swaps_left_and_right_joints(coco_and_shards):
    _, dirs = coco_and_shards
    example = _records(dirs)[0]
    crop = tf.io.decode_jpeg(example["image/encoded"], channels=3)
    args = (crop, example["person/keypoints"], example["person/visibility"], SIZE)
    image, points, _, _ = inputs.warp_person(*args)
    flipped_image, flipped_points, _, _ = inputs.warp_person(
        *args, flip=True, flip_index=FLIP_INDEX
    )
    np.testing.assert_allclose(
        flipped_points[RIGHT_SHOULDER, 0], SIZE - 1 - points[LEFT_SHOULDER, 0], atol=1e-3
    )
    np.testing.assert_allclose(
        flipped_points[RIGHT_SHOULDER, 1], points[LEFT_SHOULDER, 1], atol=1e-3
    )
    np.testing.assert_allclose(
        flipped_points.numpy(),
        np.stack(
            [SIZE - 1 - points.numpy()[list(FLIP_INDEX), 0], points.numpy()[list(FLIP_INDEX), 1]],
            -1,
        ),
        atol=1e-3,
    )
    assert np.abs(flipped_image.numpy().astype(int) - image.numpy()[:, ::-1].astype(int)).max() <= 1


def test_joint_pushed_out_of_the_input_gets_weight_zero(coco_and_shards):
    _, dirs = coco_and_shards
    example = _records(dirs)[0]
    crop = tf.io.decode_jpeg(example["image/encoded"], channels=3)
    # Zoomed in and pushed right: the left part of the person leaves the input.
    _, points, visibility, _ = inputs.warp_person(
        crop,
        example["person/keypoints"],
        example["person/visibility"],
        SIZE,
        scale=2.0,
        translation=(SIZE / 2, 0.0),
    )
    weights = inputs.joint_weights(points, visibility, SIZE).numpy()
    outside = ~np.all((points.numpy() >= 0) & (points.numpy() <= SIZE - 1), axis=-1)
    assert (points.numpy()[:, 0] > SIZE - 1).any() and (~outside & (visibility.numpy() > 0)).any()
    assert np.all(weights[outside] == 0)
    assert np.all(weights[~outside] == (visibility.numpy()[~outside] > 0))
    maps = CODEC.encode(points, weights).numpy()
    assert np.all(maps[..., outside] == 0) and maps[..., weights > 0].max() > 0.5


def test_training_dataset_batches_and_is_reproducible_with_a_seed(coco_and_shards):
    _, dirs = coco_and_shards

    def take(seed, batches=2):
        dataset = inputs.training_dataset(
            dirs,
            input_size=SIZE,
            output_stride=STRIDE,
            batch_size=4,
            seed=seed,
            augmentation={"rotation_degrees": 20.0},
            shuffle_buffer=8,
        )
        return [
            (x.numpy(), y["heatmaps"].numpy(), y["weights"].numpy())
            for x, y in dataset.take(batches)
        ]

    first, second = take(5), take(5)
    for (x, h, _w), (x2, h2, _w2) in zip(first, second):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(h, h2)
    x, h, w = first[0]
    assert (
        x.shape == (4, SIZE, SIZE, 3)
        and x.dtype == np.float32
        and x.min() >= 0.0
        and x.max() <= 1.0
    )
    assert h.shape == (4, SIZE // STRIDE, SIZE // STRIDE, NUM_KEYPOINTS) and w.shape == (
        4,
        NUM_KEYPOINTS,
    )
    for maps, weights in zip(h, w):
        assert np.all(maps[..., weights == 0] == 0)
        assert np.all(maps[..., weights > 0].max(axis=(0, 1)) > 0.5)
    assert not np.array_equal(first[0][0], take(6, batches=1)[0][0])
    with pytest.raises(ValueError, match="unknown augmentation settings"):
        inputs.training_dataset(dirs, SIZE, augmentation={"rotation": 5})


def test_evaluation_dataset_maps_back_to_the_original_image(coco_and_shards):
    coco, dirs = coco_and_shards
    people = {a["id"]: a for a in coco["annotations"]}
    batches = list(inputs.evaluation_dataset(dirs, input_size=SIZE, batch_size=4))
    assert [len(b["image"]) for b in batches] == [4, 1]
    seen = []
    for batch in batches:
        for i, person_id in enumerate(batch["person_id"].numpy()):
            seen.append(person_id)
            person = people[int(person_id)]
            original = np.asarray(person["keypoints"], np.float64).reshape(-1, 3)
            labelled = original[:, 2] > 0
            np.testing.assert_array_equal(batch["visibility"][i], original[:, 2])
            np.testing.assert_allclose(
                batch["original_keypoints"][i].numpy()[labelled], original[labelled, :2], atol=1e-3
            )
            to_original = batch["to_original"][i].numpy()
            back = batch["keypoints"][i].numpy() @ to_original[:, :2].T + to_original[:, 2]
            np.testing.assert_allclose(back[labelled], original[labelled, :2], atol=2e-3)
            np.testing.assert_allclose(batch["bbox"][i], person["bbox"], atol=1e-4)
            assert batch["image_id"][i] == person["image_id"]
    assert batch["to_original"].shape[1:] == (2, 3) and batch["original_size"].shape[1:] == (2,)
    shards = [json.loads(Path(d, "index.json").read_text())["shards"] for d in dirs]
    assert len(seen) == sum(sum(s.values()) for s in shards)


def test_corrupt_shard_inside_the_pipeline_is_named(coco_and_shards, tmp_path):
    _, dirs = coco_and_shards
    index = shard_index.read(dirs)
    data = bytearray(Path(index["files"][1]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = tmp_path / "broken"
    broken.mkdir()
    name = index["files"][1].rsplit("/", 1)[1]
    (broken / name).write_bytes(bytes(data))
    (broken / "index.json").write_text(Path(dirs[1], "index.json").read_text())
    files = shard_index.read([dirs[0], str(broken)])["files"]
    with (
        pytest.raises(records.CorruptShardError, match=rf"{name}: record \d+"),
        records.named_shard_errors(files),
    ):
        for _ in inputs.training_dataset(
            [dirs[0], str(broken)], input_size=SIZE, batch_size=2, repeat=False
        ):
            pass


def test_sample_grid_colours_each_joint_where_it_is():
    points = tf.constant([[10.0 + 3 * k, 20.0 + 2 * k] for k in range(NUM_KEYPOINTS)])
    weights = tf.constant([1.0] * (NUM_KEYPOINTS - 1) + [0.0])
    maps = HeatmapCodec(SIZE, STRIDE, sigma=1.0).encode(points, weights).numpy()
    images = np.full((2, SIZE, SIZE, 3), 0.5, np.float32)
    grid = visualize.sample_grid(
        images, np.stack([maps, np.zeros_like(maps)]), columns=2, gap=2, keypoint_set=AIC
    )
    assert grid.shape == (SIZE, 2 * SIZE + 2, 3) and grid.dtype == np.uint8
    x, y = (int(v) for v in points[RIGHT_SHOULDER])
    assert int(grid[y, x, 0]) - int(grid[y, x, 2]) > 80  # right side: warm
    x, y = (int(v) for v in points[LEFT_SHOULDER])
    assert int(grid[y, x, 2]) - int(grid[y, x, 0]) > 80  # left side: cool
    assert np.all(grid[:, SIZE + 2 :] == 128)  # no heatmaps: the image unchanged


@pytest.mark.parametrize("flip", [False, True])
def test_unrotated_warp_takes_the_axis_aligned_path_with_the_same_pixels(coco_and_shards, flip):
    _, dirs = coco_and_shards
    crop = tf.cast(tf.io.decode_jpeg(_records(dirs)[0]["image/encoded"], channels=3), tf.float32)
    matrix = inputs.input_to_crop(
        tf.shape(crop)[0], SIZE, scale=1.3, translation=(5.0, -3.0), flip=flip
    )
    fast = inputs._sample_axis_aligned(crop, matrix, SIZE).numpy()
    general = inputs._sample_projective(crop, matrix, SIZE).numpy()
    # The kernels differ only within a pixel of the crop's edge (crop_and_resize does not blend with
    # the black outside); this zoom keeps the input inside the crop but for the translated margin.
    inner = np.s_[8:-8, 8:-8]
    np.testing.assert_allclose(fast[inner], general[inner], atol=1e-3)


def test_half_size_decoding_keeps_keypoints_exact_and_pixels_aligned(coco_and_shards):
    _, dirs = coco_and_shards
    example = _records(dirs)[0]
    args = (
        example["person/keypoints"],
        example["person/visibility"],
        SIZE,
        1.0,
        10.0,
        (2.0, 1.0),
        False,
    )
    full = inputs.warp_person(tf.io.decode_jpeg(example["image/encoded"], channels=3), *args)
    half = inputs.warp_person(
        tf.io.decode_jpeg(example["image/encoded"], channels=3, ratio=2), *args, decode_ratio=2
    )
    np.testing.assert_allclose(half[1].numpy(), full[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(half[3].numpy(), full[3].numpy(), atol=1e-5)
    # 128-pixel crop to a 64-pixel input: the same picture, up to JPEG's DCT scaling and edges.
    half_image, full_image = half[0].numpy().astype(np.float32), full[0].numpy().astype(np.float32)
    difference = np.abs(half_image - full_image)[4:-4, 4:-4]
    assert difference.mean() < 4.0, difference.mean()
    shifted = np.abs(half_image[4:-4, 5:-3] - full_image[4:-4, 4:-4]).mean()
    assert difference.mean() < shifted  # a half-pixel misalignment would not beat a one-pixel shift


def test_rotation_probability_leaves_the_rest_unrotated():
    augmentation = inputs.Augmentation(rotation_probability=0.25)
    angles = inputs._random_params(tf.constant([3, 0], tf.int64), augmentation, SIZE, count=400)[
        "rotation_degrees"
    ].numpy()
    assert 0.15 < np.mean(angles != 0.0) < 0.35
    assert np.abs(angles).max() <= augmentation.rotation_degrees
    assert inputs.Augmentation.from_dict({"rotation_probability": 1.0}).rotation_probability == 1.0


def test_colour_jitter_identity_grey_and_contrast():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (2, 8, 8, 3)), tf.uint8)
    ones, zeros = tf.ones([2]), tf.zeros([2])
    unchanged = inputs.apply_colour(
        images, inputs.colour_matrix(ones, zeros), ones, zeros, scale=1 / 255
    ).numpy()
    np.testing.assert_allclose(unchanged, images.numpy() / 255, atol=1e-5)
    # Saturation 0: every pixel becomes its luminance (R = G = B).
    grey = inputs.apply_colour(
        images, inputs.colour_matrix(zeros, zeros + 40.0), ones, zeros, scale=1 / 255
    ).numpy()
    luminance = images.numpy() @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(grey, np.repeat(luminance[..., None], 3, -1), atol=1e-4)
    # Contrast 0 and a brightness shift: one flat colour, the mean luminance plus the shift.
    flat = inputs.apply_colour(
        images, inputs.colour_matrix(ones, zeros), zeros, zeros + 0.1, scale=1 / 255
    ).numpy()
    np.testing.assert_allclose(
        flat, luminance.mean(axis=(1, 2))[:, None, None, None] + 0.1 + 0 * flat, atol=1e-4
    )
