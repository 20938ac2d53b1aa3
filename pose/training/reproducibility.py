"""What makes a training run reproducible: the same config, data and seed give the same weights,
bit for bit, on one machine (tests/test_determinism.py; the cost in BENCHMARKS.md, "Reproducible
training").

- The seed (config key `seed`, default 0, in train_metadata.json) sets Python's, NumPy's and
  TensorFlow's generators: the initial weights. The input pipeline draws from the same seed with
  stateless ops keyed by (seed, batch number), in a fixed order (pose.data.inputs.training_dataset).
- The schedule is a function of steps alone (pose.training.learning_rate); the time budget only
  stops a run (pose.training.budget).
- TensorFlow's op determinism (config key `deterministic_ops`; default: on when training on GPUs).
  On the CPU, TensorFlow's kernels and oneDNN's (with a fixed thread count) are deterministic already:
  two runs of a few hundred steps on two threads, and on two logical devices, give identical weights
  without it. On GPUs several kernels MobileNetV2 needs are not by default (the depthwise convolution's
  filter gradient, among others, accumulates with atomics), so there it is on. It is process-wide,
  and TensorFlow exports no switch to turn it off again: a later run in the same process keeps it.

"One machine": oneDNN picks its kernels by the CPU's instruction set, and a GPU's by its model, so
another machine may round differently; the schedule, data order and augmentation stay the same.
"""

import keras
import tensorflow as tf


def make_reproducible(seed: int, deterministic_ops: bool) -> None:
    """Seeds every generator; turns op determinism on when asked (see above: never off)."""
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
