"""From probability maps to instances: int32 label images, background 0,
no overlap by construction.

One entry point, instances(probabilities, config), serves validation
during training, prediction and ensembles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

METHODS = ("cc",)


@dataclass(frozen=True)
class PostprocessConfig:
    """method 'cc': connected components of body > threshold, objects under
    min_size pixels dropped."""

    method: str = "cc"
    threshold: float = 0.5
    min_size: int = 10

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown post-processing method '{self.method}'; choose one of {', '.join(METHODS)}")


def components(mask: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Instances of a binary mask: 8-connected components of at least
    min_size pixels, as consecutive int32 labels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.asarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    if min_size <= 1:
        return labels
    keep = stats[:, cv2.CC_STAT_AREA] >= min_size
    keep[0] = False
    lookup = np.zeros(n, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def instances(probabilities: np.ndarray, config: PostprocessConfig = PostprocessConfig()) -> np.ndarray:
    """(H, W, K) probabilities (body first, then border if any) -> (H, W) int32 labels."""
    body = probabilities[..., 0]
    return components(body > config.threshold, config.min_size)


def calibrate(probabilities, truths, base: PostprocessConfig, grid: dict) -> tuple[PostprocessConfig, float]:
    """The config from the grid (field -> candidate values, crossed) whose
    mean Kaggle score on the labelled maps is highest, and that score."""
    import itertools

    from nucjax.metrics import image_score

    names = list(grid)
    best, best_score = base, float("-inf")
    for values in itertools.product(*(grid[n] for n in names)):
        config = dataclasses.replace(base, **dict(zip(names, values)))
        score = float(np.mean([image_score(t, instances(p, config)).score for p, t in zip(probabilities, truths)]))
        if score > best_score:
            best, best_score = config, score
    return best, best_score
