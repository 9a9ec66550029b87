"""The reference report's simple model: preprocess, threshold, connected components.

No learning: its one parameter, the threshold on the preprocessed 0..255
image, is picked by a sweep on labelled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nucjax.metrics import full_mask_score, image_score
from nucjax.preprocess import preprocess

#: The report's threshold on the preprocessed image.
DEFAULT_THRESHOLD = 40
SWEEP_THRESHOLDS = tuple(range(10, 205, 5))


def components(mask: np.ndarray) -> np.ndarray:
    """Instances of a binary mask: 8-connected components, int32 labels."""
    _, labels = cv2.connectedComponents(np.asarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return labels


def threshold_labels(image: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Predict instances of an (H, W, 3) uint8 image; (H, W) int32 labels."""
    return components(preprocess(image) > threshold)


@dataclass(frozen=True)
class SweepResult:
    """Mean scores of the simple model at each threshold, and the best picks."""

    thresholds: tuple[float, ...]
    kaggle: tuple[float, ...]
    full_mask: tuple[float, ...]

    @property
    def best_by_kaggle(self) -> float:
        return self.thresholds[int(np.argmax(self.kaggle))]

    @property
    def best_by_full_mask(self) -> float:
        return self.thresholds[int(np.argmax(self.full_mask))]


def sweep_thresholds(images, truths, thresholds=SWEEP_THRESHOLDS) -> SweepResult:
    """Score the simple model at every threshold on labelled images.

    Picks by both scores: the report's full-mask score (what it tuned) and
    the Kaggle metric (what counts). Each image is preprocessed once.
    """
    preprocessed = [preprocess(image) for image in images]
    truths = list(truths)
    if len(preprocessed) != len(truths) or not truths:
        raise ValueError(f"need matching, non-empty images and truths, got {len(preprocessed)} and {len(truths)}")
    kaggle, full = [], []
    for threshold in thresholds:
        preds = [components(p > threshold) for p in preprocessed]
        kaggle.append(float(np.mean([image_score(t, p).score for t, p in zip(truths, preds)])))
        full.append(float(np.mean([full_mask_score(t, p) for t, p in zip(truths, preds)])))
    return SweepResult(tuple(thresholds), tuple(kaggle), tuple(full))
