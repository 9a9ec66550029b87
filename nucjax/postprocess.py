"""From probability maps to instances: int32 label images, background 0,
labels 1..n, no overlap by construction.

One entry point, instances(probabilities, config, image), serves validation
during training, prediction and ensembles. Methods:

- cc: connected components of body > threshold.
- reference: the reference report's OpenCV chain, exactly: threshold 0.4,
  3x3 opening twice, 7x7 elliptical opening, chessboard distance
  transform, sure foreground at 0.2 x its maximum, components as markers,
  cv2.watershed on the original image.
- distance: Euclidean distance transform of the mask, smoothed; its peaks
  (the highest point within peak_radius) are the markers of a watershed on
  the inverted distance within the mask.
- border: the DSB2018 winners' way for body + border models: seeds are
  body x (1 - border) > seed_threshold, small seeds dropped, and a
  watershed on the inverted body probability grows them within
  body > threshold.
- auto (the default): border when the maps have a border channel, else distance.

In both watersheds a piece of the mask that no marker reached is one object.

All but reference fill the holes of the mask first, and drop objects under
min_size pixels and, when min_mean_probability > 0, objects whose mean body
probability is lower at the end. Every object is one connected piece by
construction: components, or a watershed grown from one connected marker
or an unreached piece.

A config may carry a kind's own body and seed thresholds (by_kind, see
KIND_FIELDS): calibration gives stained tissue, whose probabilities run
lower, its own when they score better beyond the noise on its images.
The caller resolves them for an image with for_image (by
nucjax.data.split.image_kind); instances uses what it is given.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.segmentation import watershed

from nucjax.data.split import KINDS, image_kind
from nucjax.metrics import image_score, paired_gain

METHODS = ("auto", "cc", "reference", "distance", "border")
#: What an image kind may set for itself: where the mask and the markers
#: are drawn in its maps. The clean-up (min_size) stays shared.
KIND_FIELDS = ("threshold", "seed_threshold", "peak_radius")


@dataclass(frozen=True)
class PostprocessConfig:
    method: str = "auto"
    threshold: float = 0.5  # body probability that makes the mask
    seed_threshold: float = 0.7  # border: body x (1 - border) that makes a seed
    min_seed_size: int = 6  # border: smaller seeds are noise
    distance_sigma: float = 1.0  # distance: smoothing (px) of the distance map
    peak_radius: int = 4  # distance: a marker is the highest point within this many pixels
    min_size: int = 15  # objects under this many pixels are dropped
    min_mean_probability: float = 0.0  # objects whose mean body probability is lower are dropped
    fill_holes: bool = True
    # A kind's own KIND_FIELDS: ((kind, ((field, value), ...)), ...); a mapping
    # {kind: {field: value}} (or JSON's nested lists) is taken too.
    by_kind: tuple = ()

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown post-processing method '{self.method}'; choose one of {', '.join(METHODS)}")
        if not (0 <= self.threshold <= 1 and 0 <= self.seed_threshold <= 1):
            raise ValueError("thresholds must be in [0, 1]")
        object.__setattr__(self, "by_kind", _kind_settings(self.by_kind))
        for _, fields in self.by_kind:
            dataclasses.replace(self, by_kind=(), **dict(fields))  # the same checks for a kind's values

    def for_kind(self, kind: str | None) -> "PostprocessConfig":
        """The settings for images of `kind`: its own where it has them, the shared ones otherwise."""
        own = dict(self.by_kind).get(kind, ())
        return dataclasses.replace(self, by_kind=(), **dict(own)) if self.by_kind else self

    def for_image(self, image: np.ndarray) -> "PostprocessConfig":
        """The settings for an (H, W, 3) RGB image: those of its kind (nucjax.data.split.image_kind)."""
        return self.for_kind(image_kind(image)) if self.by_kind else self


def settings_text(fields) -> str:
    """A kind's own settings in words: 'threshold 0.2, seed threshold 0.5'."""
    return ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in fields)


def _pairs(items) -> list:
    return list(items.items()) if isinstance(items, dict) else [tuple(item) for item in items]


def _kind_settings(by_kind) -> tuple:
    """by_kind as sorted, hashable pairs; ValueError for an unknown kind or field."""
    settings = []
    for kind, fields in _pairs(by_kind):
        if kind not in KINDS:
            raise ValueError(f"unknown image kind '{kind}' in by_kind; choose from {', '.join(KINDS)}")
        fields = tuple(sorted(_pairs(fields)))
        unknown = sorted({name for name, _ in fields} - set(KIND_FIELDS))
        if unknown:
            raise ValueError(f"a kind can set only {', '.join(KIND_FIELDS)}, not {', '.join(unknown)}")
        if fields:
            settings.append((kind, fields))
    return tuple(sorted(settings))


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
    return _relabel(labels, keep)


def _relabel(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Keep the labels where keep[label] is True, numbered 1..n in order."""
    keep = keep.copy()
    keep[0] = False
    lookup = np.zeros(len(keep), dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def _uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)


def reference_instances(body: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """The reference report's chain on a body probability map (H, W) in 0..1.

    image: the original (H, W, 3) uint8 image the watershed runs on; the
    probability map stands in for it when absent.
    """
    mask = (body > 0.4).astype(np.uint8)
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8), iterations=2)
    opened = cv2.morphologyEx(opened, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    distance = cv2.distanceTransform(opened, cv2.DIST_C, 3)
    if distance.max() == 0:
        return np.zeros(body.shape, np.int32)
    sure_foreground = (distance > 0.2 * distance.max()).astype(np.uint8)
    _, markers = cv2.connectedComponents(sure_foreground, connectivity=8)
    # Markers: 1 is background, 2.. the nuclei, 0 the unknown rim to flood.
    markers = markers + 1
    markers[(opened > 0) & (sure_foreground == 0)] = 0
    picture = image if image is not None else np.repeat(_uint8(body)[..., None], 3, axis=2)
    flooded = cv2.watershed(np.ascontiguousarray(picture, dtype=np.uint8), markers.astype(np.int32))
    labels = np.where(flooded > 1, flooded - 1, 0)  # watershed lines (-1) and background go to 0
    return _consecutive(labels)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    present = np.bincount(labels.ravel()) > 0
    return _relabel(labels, present)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole (background the image edge cannot reach) filled."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    cv2.floodFill(padded, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)  # the outside becomes 2
    return padded[1:-1, 1:-1] != 2


def _clean(labels: np.ndarray, body: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Drop small and (when asked) dim objects; labels become 1..n."""
    n = int(labels.max())
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= max(config.min_size, 1)
    if config.min_mean_probability > 0:
        sums = np.bincount(labels.ravel(), weights=body.ravel(), minlength=n + 1)
        keep &= sums >= config.min_mean_probability * np.maximum(sizes, 1)
    return _relabel(labels, keep)


def _grow(markers: np.ndarray, landscape: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Marker-controlled watershed on landscape (low floods first), within
    mask; a piece of mask no marker reached is one object. A nucleus gets
    no marker when its border is predicted thick, its body is dim (border
    seeds) or a larger neighbour's peak is within reach (distance peaks):
    dropping it costs a miss, keeping it whole at worst an unsplit pair.
    The clean-up still drops small and dim pieces."""
    grown = watershed(landscape, markers, mask=mask).astype(np.int32) if markers.max() else markers
    pieces = components(mask)
    reached = np.zeros(int(pieces.max()) + 1, bool)
    reached[pieces[grown > 0]] = True
    unreached = _relabel(pieces, ~reached)
    return np.where(unreached > 0, unreached + grown.max(), grown).astype(np.int32)


def distance_markers(mask: np.ndarray, config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(markers, smoothed distance): peaks of the distance map, the highest
    point within peak_radius pixels, and at least 1 px deep; touching peak
    pixels (plateaus) make one marker."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if config.distance_sigma > 0:
        distance = cv2.GaussianBlur(distance, (0, 0), config.distance_sigma)
    window = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * config.peak_radius + 1,) * 2)
    peaks = (distance >= cv2.dilate(distance, window)) & (distance >= 1) & mask
    return components(peaks), distance


def resolved_method(config: PostprocessConfig, channels: int) -> str:
    if config.method == "auto":
        return "border" if channels > 1 else "distance"
    if config.method == "border" and channels < 2:
        raise ValueError("the border method needs a border channel; this model predicts the body only")
    return config.method


def _as_maps(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, np.float32)
    return probabilities[..., None] if probabilities.ndim == 2 else probabilities


def _raw_instances(probabilities: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Instances before the shared clean-up (reference: the final result)."""
    body = probabilities[..., 0]
    method = resolved_method(config, probabilities.shape[-1])
    mask = body > config.threshold
    if config.fill_holes:
        mask = _fill_holes(mask)  # before markers: a hole would make false peaks
    if method == "cc":
        return components(mask)
    if method == "distance":
        markers, distance = distance_markers(mask, config)
        return _grow(markers, -distance, mask)
    seeds = components(body * (1 - probabilities[..., 1]) > config.seed_threshold, config.min_seed_size)
    return _grow(seeds, -body, mask | (seeds > 0))


def instances(probabilities: np.ndarray, config: PostprocessConfig = PostprocessConfig(), image: np.ndarray | None = None) -> np.ndarray:
    """(H, W, K) probabilities (body, then border when K > 1) -> (H, W) int32 labels.

    image: the original RGB image, used by the reference method only.
    """
    probabilities = _as_maps(probabilities)
    if resolved_method(config, probabilities.shape[-1]) == "reference":
        return reference_instances(probabilities[..., 0], image)
    return _clean(_raw_instances(probabilities, config), probabilities[..., 0], config)


#: What calibration tries, per method. The clean-up fields (min_size) are
#: cheap to vary: the watershed is computed once per other setting.
CALIBRATION_GRID = {
    "border": {"threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "seed_threshold": (0.5, 0.6, 0.7, 0.8, 0.9), "min_size": (5, 15, 30)},
    "distance": {"threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "peak_radius": (2, 4, 6, 9), "min_size": (5, 15, 30)},
    "cc": {"threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "min_size": (5, 15, 30)},
    "reference": {},
}
_CLEAN_FIELDS = ("min_size", "min_mean_probability")


#: The fewest validation images of a kind that calibrate gives settings of its own.
MIN_KIND_IMAGES = 8


def calibrate(probabilities, truths, base: PostprocessConfig, grid: dict | None = None, rounds: int = 2,
              kinds=None) -> tuple[PostprocessConfig, float]:
    """Tune post-processing on labelled maps: (best config, its mean Kaggle score).

    grid: field -> candidate values (default: CALIBRATION_GRID for the
    method). Fields are tuned one at a time, the others held, for `rounds`
    passes (coordinate ascent: a few dozen evaluations instead of the whole
    cross product). A value replaces the current one only when its gain is
    beyond the images' noise (metrics.paired_gain): a threshold moved for a
    gain within it fits these images, not the next ones. Watershed results
    are cached by the fields they depend on, so varying min_size costs little.

    kinds: each image's kind (nucjax.data.split.image_kind). When the
    images are of several kinds, each kind with at least MIN_KIND_IMAGES
    then tunes its KIND_FIELDS from the shared result, on its own images
    and by the same rule; what it changes becomes its by_kind entry.
    """
    maps = [_as_maps(p) for p in probabilities]
    kinds = [None] * len(maps) if kinds is None else list(kinds)
    method = resolved_method(base, maps[0].shape[-1]) if maps else base.method
    grid = CALIBRATION_GRID[method] if grid is None else grid
    raw_cache: dict = {}
    scores: dict = {}

    def image_score_of(config: PostprocessConfig, index: int) -> float:
        config = config.for_kind(kinds[index])
        if (config, index) not in scores:
            raw_key = dataclasses.replace(config, **{f: getattr(PostprocessConfig, f) for f in _CLEAN_FIELDS}), index
            if raw_key not in raw_cache:
                raw_cache[raw_key] = None if method == "reference" else _raw_instances(maps[index], config)
            raw, found = raw_cache[raw_key], maps[index]
            prediction = instances(found, config) if raw is None else _clean(raw, found[..., 0], config)
            scores[config, index] = image_score(truths[index], prediction).score
        return scores[config, index]

    def ascend(start: PostprocessConfig, members: list[int], fields: dict) -> PostprocessConfig:
        best = start
        for _, name in itertools.product(range(rounds), fields):
            for value in fields[name]:
                candidate = dataclasses.replace(best, **{name: value})
                if candidate != best and paired_gain([image_score_of(candidate, i) for i in members],
                                                     [image_score_of(best, i) for i in members]).significant:
                    best = candidate
        return best

    everyone = list(range(len(maps)))
    best = ascend(dataclasses.replace(base, by_kind=()), everyone, grid)
    own_fields = {name: values for name, values in grid.items() if name in KIND_FIELDS}
    present = sorted({k for k in kinds if k is not None})
    by_kind = {}
    for kind in present if len(present) > 1 else ():  # one kind: the shared settings are its own
        members = [i for i, k in enumerate(kinds) if k == kind]
        if len(members) < MIN_KIND_IMAGES:
            continue
        own = ascend(best, members, own_fields)
        changed = {name: getattr(own, name) for name in KIND_FIELDS if getattr(own, name) != getattr(best, name)}
        if changed:
            by_kind[kind] = changed
    best = dataclasses.replace(best, by_kind=by_kind)
    return best, float(np.mean([image_score_of(best, i) for i in everyone])) if maps else 0.0
