"""The learning-rate schedule (config keys lr, lr_schedule, decay_*, staircase, warmup_steps)."""

import math

from pose.training.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """The learning rate for `step`. exponential: the seed's lr x decay_rate^(step / decay_steps)
    (staircase by default). cosine: from lr down to lr / 100 as `progress` goes from 0 to 1, where
    progress is the larger of step / total steps and the share of the time budget spent
    (pose.training.budget), so a run cut by its time budget still ends annealed, on a fast machine or
    a slow one. Both after a linear warm-up."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "exponential":
        exponent = step // cfg.decay_steps if cfg.staircase else step / cfg.decay_steps
        return cfg.lr * cfg.decay_rate**exponent
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    return cfg.lr
