"""Shared pose code: every pipeline step imports from here, no step imports another step.

keypoints       the AI Challenger keypoint spec (names, order, flip pairs, skeleton, OKS sigmas, release layout)
synthetic       the synthetic AI Challenger release behind `synthetic://N`
storage         URIs: gs:// (honours STORAGE_EMULATOR_HOST), http(s), uploads for publishing, is_inside,
                small objects by name (checkpoint mirror)
packs           which images belong to which shard, and the per-shard packs convert writes and shard reads
remote_checkpoints  train's checkpoints mirrored to gs:// (written as they go, marker last; resume; fingerprint)
atomic          write a whole output folder or file under a temporary name, then rename
outputs         the output rule: no step replaces a folder it did not write, or its own input
integrity       checksums one step writes and the next verifies (shards in index.json, .tflite sha256)
jpeg            the structural check that a JPEG is whole (shard, before decoding)
steplog         logging set-up and the read / wrote / took summary every step prints
records         the tf.train.Example layout of a shard (writer and parser share it)
inputs          the tf.data input pipeline (training augmentation, evaluation crops)
codec           the heatmap codec: Gaussian targets (TF), decoding (argmax, quarter, DARK), coordinates, flip test
metrics         PCKh and OKS AP (pycocotools)
networks        MobileNetV2 CPM and Hourglass (Keras), built from a config; a model's identity (family,
                the seed's output node and released file)
contract        the export contracts (seed: BGR 0..255, the seed's channel order; aic: RGB / 255)
results         results.json: evaluate's figures, its schema, reading and writing
config          the training config: every key, its default and type, the seed's key names
tflite_runtime  loading, running and timing .tflite files with LiteRT
visualize       sample grids (heatmaps over images) for people and TensorBoard
report          the evaluation's HTML report
web_demo        the web demo's build, published files, seed .json and its still-image mode in Python
cluster         the run-time rules of a KFP cluster run (local paths, GCS key, the driver's string values)
"""
