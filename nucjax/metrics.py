"""The DSB2018 Kaggle metric and the reference report's full-mask score.

Everything here is pure numpy on label images (int, 0 = background) and
returns floats or small records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Kaggle's IoU thresholds 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


@dataclass(frozen=True)
class ImageScore:
    """The Kaggle score of one image, with the counts behind it."""

    score: float
    n_true: int
    n_pred: int
    tp: tuple[int, ...]  # true positives at each of IOU_THRESHOLDS


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 0..n without gaps, 0 staying background.

    Returns (flat labels, areas) where areas[i] is the pixel count of label
    i (areas[0] the background). O(pixels + max label) with no sort, so
    sparse ids (a 16-bit PNG with ids up to 65535) stay cheap, and labels
    that are already consecutive are not copied.
    """
    flat = np.ravel(labels)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"label images must hold integers, got {flat.dtype}")
    try:
        counts = np.bincount(flat, minlength=1)
    except ValueError:
        raise ValueError("label images may not hold negative labels") from None
    present = np.flatnonzero(counts[1:]) + 1
    if len(present) == len(counts) - 1:
        return flat, counts
    lookup = np.zeros(len(counts), dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[flat], np.concatenate([counts[:1], counts[present]])


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns).

    One bincount over label pairs gives all intersections at once.
    """
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"truth {np.shape(truth)} and prediction {np.shape(pred)} differ in shape")
    t, area_true = compact_labels(truth)
    p, area_pred = compact_labels(pred)
    n_true, n_pred = len(area_true) - 1, len(area_pred) - 1
    pair_dtype = np.int32 if (n_true + 1) * (n_pred + 1) < 2**31 else np.int64
    pairs = t.astype(pair_dtype, copy=False) * (n_pred + 1) + p
    inter = np.bincount(pairs, minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)[1:, 1:]
    return inter / (area_true[1:, None] + area_pred[None, 1:] - inter)


def image_score(truth: np.ndarray, pred: np.ndarray) -> ImageScore:
    """Kaggle's score of one image: mean over IOU_THRESHOLDS of TP/(TP+FP+FN).

    A predicted object hits a true one when their IoU is strictly above the
    threshold; above 0.5 a match is unique, so hits are just counted. An
    image whose truth and prediction are both empty scores 1; one with
    objects and no prediction scores 0.
    """
    iou = iou_matrix(truth, pred)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return ImageScore(1.0, 0, 0, (0,) * len(IOU_THRESHOLDS))
    candidates = iou[iou > IOU_THRESHOLDS[0]]
    tp = (candidates[:, None] > IOU_THRESHOLDS).sum(axis=0)
    per_threshold = tp / (n_true + n_pred - tp)  # TP + FP + FN
    return ImageScore(float(per_threshold.mean()), n_true, n_pred, tuple(int(x) for x in tp))


def mean_by(scores, keys) -> dict[str, float]:
    """{key: mean of the scores with that key}, keys sorted: scores by kind or by group."""
    return {k: float(np.mean([s for s, kk in zip(scores, keys) if kk == k])) for k in sorted(set(keys))}


def kaggle_score(truths, preds) -> float:
    """Mean of image_score over paired sequences of label images."""
    scores = [image_score(t, p).score for t, p in zip(truths, preds, strict=True)]
    if not scores:
        raise ValueError("kaggle_score needs at least one image")
    return float(np.mean(scores))


def full_mask_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """The reference report's "IoU hit" score of one image.

    The merged masks (all nuclei as one foreground) are compared as a single
    object: the fraction of IOU_THRESHOLDS that their IoU exceeds. It ignores
    how the foreground is cut into nuclei, which is why the report's 0.72
    here fell to 0.24 on the Kaggle metric.
    """
    return float((full_mask_iou(truth, pred) > IOU_THRESHOLDS).mean())


def full_mask_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the merged foregrounds; 1.0 when both are empty."""
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    union = np.count_nonzero(t | p)
    return 1.0 if union == 0 else np.count_nonzero(t & p) / union


@dataclass(frozen=True)
class Gain:
    """A paired difference of mean scores over the same images, with its
    bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float

    @property
    def significant(self) -> bool:
        """The whole interval is above zero: a gain beyond the images' noise."""
        return self.low > 0

    def __str__(self) -> str:
        return f"{self.mean:+.4f} ({100 * self.confidence:.0f}% interval {self.low:+.4f} to {self.high:+.4f})"


def paired_gain(new, old, confidence: float = 0.9, resamples: int = 2000, seed: int = 0) -> Gain:
    """How much better `new` scores than `old` on the same images (per-image
    scores, in one order): the mean difference and a paired bootstrap
    interval over images. Deterministic for a seed.

    Thresholds, checkpoints and ensemble members chosen on gains inside
    this interval are chosen on noise, and lose on unseen images.
    """
    differences = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    if differences.ndim != 1 or differences.size == 0:
        raise ValueError(f"need two equal-length, non-empty lists of scores, got {np.shape(new)} and {np.shape(old)}")
    draws = np.random.default_rng(seed).integers(0, differences.size, (resamples, differences.size))
    means = differences[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Gain(float(differences.mean()), float(low), float(high), confidence)
