"""The data set, from the release to the training batches: the keypoint spec and release layout,
the synthetic release, shard packs and records, JPEG checks, the tf.data input pipeline
(map: pose/__init__.py)."""
