"""train's time budget (config key max_minutes): a safety stop, never the schedule. A model is
defined by its steps (max_steps, max_epoch); a run that its budget stops before them did not make the
model its config defines, and says so (components/train.py). The seconds of earlier runs of the same
output (restarts, preemptions) count too."""

import math
import time


class TimeBudget:
    def __init__(self, max_minutes: float | None, spent_before: float = 0.0):
        self.seconds = 60.0 * max_minutes if max_minutes else None
        self.started = time.perf_counter() - spent_before

    def elapsed(self) -> float:
        """Seconds trained on this output, earlier runs included."""
        return time.perf_counter() - self.started

    def spent(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds


def duration(seconds: float) -> str:
    """1h02m or 3m04s; ? when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
