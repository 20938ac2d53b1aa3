"""Fine-tuning: which layers of a (warm-started) network keep their weights while the rest trains.

The training config's `frozen_layers` is a regular expression of layer names (re.match): the default
main job (experiments/local.yaml) holds the released CPM's backbone and first five stages so that
only its last stage adapts to the rendered figures, and the release keeps its skill on real
photographs (BENCHMARKS.md, "Fine-tuning the released CPM"). `batch_norm_frozen`
(pose.training.objective) is the companion: batch norms normalise with their moving statistics while
training.
"""

import logging
import re

log = logging.getLogger(__name__)


class FreezeError(ValueError):
    """frozen_layers matches no layer of the network: a typo would otherwise train everything."""


def freeze_layers(model, pattern: str | None) -> list[str]:
    """Marks the layers with weights whose name `pattern` matches untrainable, before the optimizer is
    built; returns their names (none without a pattern)."""
    if not pattern:
        return []
    compiled = re.compile(pattern)
    frozen = [layer.name for layer in model.layers if layer.weights and compiled.match(layer.name)]
    if not frozen:
        raise FreezeError(f"frozen_layers {pattern!r} matches no layer of {model.name}")
    for name in frozen:
        model.get_layer(name).trainable = False
    log.info(
        "frozen: %d layers (%s ... %s); %d trainable weights",
        len(frozen),
        frozen[0],
        frozen[-1],
        len(model.trainable_variables),
    )
    return frozen
