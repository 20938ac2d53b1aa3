"""The learning-rate schedule (config keys lr, lr_schedule, decay_*, staircase, warmup_steps)."""

import math

from pose.training.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate for `step` of a run planned for `total_steps` (max_steps, or max_epoch
    epochs). exponential: the seed's lr x decay_rate^(step / decay_steps) (staircase by default).
    cosine: from lr down to lr / 100 over the planned steps. Both after a linear warm-up.

    A function of steps alone, never of the clock: a model is defined by its steps, so the same
    command gives the same weights on a fast machine or a slow one (max_minutes only stops a run,
    pose.training.budget; until issue 21 a cosine run annealed by the share of max_minutes spent,
    so its weights depended on the machine's speed and load)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "exponential":
        exponent = step // cfg.decay_steps if cfg.staircase else step / cfg.decay_steps
        return cfg.lr * cfg.decay_rate**exponent
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, step / max(total_steps, 1))
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return cfg.lr
