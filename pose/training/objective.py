"""What training minimises, and one optimisation step of it across the replicas."""

import tensorflow as tf

from pose.models import networks


def stage_losses(stage_heatmaps: list, heatmaps, weights, global_batch_size: int):
    """The seed's loss per stage: tf.nn.l2_loss(prediction - target) / batch, with joints of weight 0
    (unlabelled or outside the input) left out. Dividing by the GLOBAL batch makes the replicas' sum
    the mean over the global batch. Summed over the stages: intermediate supervision."""
    mask = tf.cast(weights, tf.float32)[:, None, None, :]
    return tf.stack(
        [
            tf.nn.l2_loss((tf.cast(h, tf.float32) - heatmaps) * mask) / global_batch_size
            for h in stage_heatmaps
        ]
    )


def train_step_function(
    model, optimizer, strategy, global_batch: int, jit_compile: bool, batch_norm_learns: bool = True
):
    """A compiled `iterator -> stage losses summed over the replicas` that takes one batch from the
    distributed iterator and applies one update of `optimizer` on every replica. batch_norm_learns
    False (the config's batch_norm_frozen): batch norms normalise with their moving statistics (the
    networks have no dropout, so `training` decides only that; gamma and beta still train)."""

    # XLA compiles the forward and backward pass; the optimizer update stays outside it because
    # its cross-replica all-reduce cannot run inside a compiled cluster.
    @tf.function(jit_compile=jit_compile)
    def gradients(images, heatmaps, weights):
        with tf.GradientTape() as tape:
            stages = networks.stage_heatmaps(model, images, training=batch_norm_learns)
            losses = stage_losses(stages, heatmaps, weights, global_batch)
            # identity unless a LossScaleOptimizer (mixed precision)
            scaled = optimizer.scale_loss(tf.reduce_sum(losses))
        return tape.gradient(scaled, model.trainable_variables), losses

    def replica_step(images, targets):
        grads, losses = gradients(images, targets["heatmaps"], targets["weights"])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return losses

    @tf.function
    def train_step(iterator):
        images, targets = next(iterator)
        losses = strategy.run(replica_step, args=(images, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step
