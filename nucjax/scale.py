"""Nucleus scale: how large an image's nuclei are, and rescaling images so
their nuclei have one canonical diameter, with an exact way back.

Experiments differ more in nucleus size (8 to 90 px across DSB2018) than a
U-Net trained on native crops can absorb. A model trained with a canonical
diameter D sees every training image whose median nucleus is larger than
D shrunk so it is D px across (smaller nuclei keep their size: enlarging
would cost a pass of several times the pixels for little gain); at
prediction the diameter of an unlabelled image is estimated from a first
pass, the image is shrunk the same way, segmented, and the labels are
mapped back to the original pixel grid.

The first pass is a small pyramid (scales 1, 1/2, 1/4: 1.3 times a native
pass): a model fragments nuclei much larger than it was trained on, so a
native pass alone would call them small. Fragments only ever make nuclei
look smaller, so of the levels whose nuclei look about the trained size
in their own pixels (0.8 D to 1.5 D), the one that finds the largest
speaks; a wider band lets touching small nuclei, merged at a coarse
level, pass for large ones (measured on validation images of both splits:
bench/generalise.py's notes in docs/benchmarks.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Median of the per-image median nucleus diameters of the DSB2018 stage-1
#: training set (664 images): the scale a model trained on native crops saw
#: most, used as its target when it is asked to rescale (--scale auto).
NATIVE_DIAMETER = 18.0
#: Scale factors are kept within these bounds, whatever the estimate says:
#: images are shrunk, never enlarged.
SMALLEST_SCALE, LARGEST_SCALE = 0.1, 1.0
#: The first pass's pyramid, and the smallest image side a level may have.
PYRAMID = (1.0, 0.5, 0.25)
SMALLEST_LEVEL = 48
#: Diameters (as a share of the trained one) at which a level sees nuclei about as it was trained.
PLAUSIBLE = (0.8, 1.5)
#: An estimated scale this close to 1 (as a ratio) keeps the first pass:
#: training jitters the scale by more, so a second pass would add nothing.
KEEP_NATIVE_WITHIN = 1.15
#: An acquisition's median outvotes an image's own estimate only when the two
#: are more than this many times apart: in every DSB2018 training group each
#: image's median nucleus lies within 2.9x of its group's (masks, 607 images),
#: while a first pass that takes clusters for nuclei is off by 4x or more.
OUTVOTE_RATIO = 3.0


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-circle diameters (px) of the objects of an (H, W) label image."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return 2.0 * np.sqrt(areas / math.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """The median equivalent-circle diameter of the objects, None when there is none."""
    diameters = object_diameters(labels)
    return float(np.median(diameters)) if diameters.size else None


def scale_to(diameter: float | None, target: float) -> float:
    """The factor that brings nuclei of `diameter` px to `target` px, clipped
    to [SMALLEST_SCALE, LARGEST_SCALE]; 1 when nothing was found."""
    if not diameter or diameter <= 0 or target <= 0:
        return 1.0
    return float(min(max(target / diameter, SMALLEST_SCALE), LARGEST_SCALE))


def pyramid(shape: tuple[int, int]) -> tuple[float, ...]:
    """The first-pass scales for an image of shape: PYRAMID's levels whose
    smaller side stays at least SMALLEST_LEVEL px (always 1)."""
    return tuple(s for s in PYRAMID if s == 1.0 or min(shape) * s >= SMALLEST_LEVEL)


def pyramid_diameter(found: dict[float, float | None], target: float) -> float | None:
    """The diameter (original px) from {level scale: median diameter found
    at that level, in its px}: the largest of those found at a plausible
    size (PLAUSIBLE times target); when none is, the one closest to target
    (in ratio); None when no level found anything."""
    seen = {scale: d for scale, d in found.items() if d}
    if not seen:
        return None
    low, high = PLAUSIBLE
    plausible = [d / scale for scale, d in seen.items() if low * target <= d <= high * target]
    if plausible:
        return max(plausible)
    scale = min(seen, key=lambda s: (abs(math.log(seen[s] / target)), -s))
    return seen[scale] / scale


def acquisition_diameters(found, groups, outvote: float = OUTVOTE_RATIO) -> list[float | None]:
    """Each image's diameter, its acquisition's where its own is implausible
    for it: from the diameters the images found (None: nothing found) and
    their acquisition groups, an image keeps its own unless it lies more
    than `outvote` times from its group's geometric median, or found
    nothing; then it takes that median (None where its group found none).
    Images of one experiment share a magnification, and one image's first
    pass can take clusters of small nuclei for large ones: the median of its
    group outvotes it. But the tiles of one tissue group are cut at several
    magnifications, so a closer estimate is the image's own. outvote 1: the
    median always; infinity: the image's own always."""
    logs: dict[str, list[float]] = {}
    for diameter, group in zip(found, groups):
        if diameter:
            logs.setdefault(group, []).append(math.log(diameter))
    medians = {group: math.exp(float(np.median(values))) for group, values in logs.items()}
    limit = math.log(outvote)
    return [diameter if diameter and abs(math.log(diameter / medians[group])) <= limit else medians.get(group)
            for diameter, group in zip(found, groups)]


def snapped(scale: float, within: float = KEEP_NATIVE_WITHIN) -> float:
    """1.0 when scale is within a ratio of `within` of it, else scale."""
    return 1.0 if max(scale, 1 / scale) < within else scale


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of an image of `shape` rescaled by `scale`, at least 1 x 1."""
    if not scale > 0:
        raise ValueError(f"a scale factor must be positive, got {scale}")
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def resize_image(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (H, W) or (H, W, C) image or map resized to hw, linearly (area
    averaging when shrinking, so fine texture does not alias)."""
    hw = tuple(hw)
    if array.shape[:2] == hw:
        return array
    shrinking = hw[0] * hw[1] < array.shape[0] * array.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if array.ndim == 3 and array.shape[2] > 4:  # OpenCV resizes at most 4 channels at once (the extended U-Net reads 5)
        return np.concatenate([resize_image(array[..., i : i + 4], hw) for i in range(0, array.shape[2], 4)], axis=2)
    out = cv2.resize(np.ascontiguousarray(array), (hw[1], hw[0]), interpolation=interpolation)
    return out.reshape(hw + array.shape[2:]) if array.ndim == 3 and out.ndim == 2 else out


def resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (H, W) label image resized to hw by pixel-centred nearest
    neighbour: every output pixel takes the label under its centre, so
    nothing shifts and ids are kept (int32)."""
    hw = tuple(hw)
    labels = np.asarray(labels)
    if labels.shape == hw:
        return labels.astype(np.int32, copy=False)
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * labels.shape[0] / hw[0]).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * labels.shape[1] / hw[1]).astype(np.int64), labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]].astype(np.int32)


def restore_labels(labels: np.ndarray, body: np.ndarray, threshold: float) -> np.ndarray:
    """Labels found on a rescaled image, on the original pixel grid.

    body: the (H, W) body probability at the original size (the rescaled
    map resized back, linearly). Each object keeps its nearest-neighbour
    pixels where body > threshold and grows into the rest of that
    foreground by a watershed on body, so its outline follows the smooth
    map instead of the coarse grid's staircase; objects stay as many and
    as they were, and unclaimed foreground stays background.
    """
    from skimage.segmentation import watershed

    coarse = resize_labels(labels, body.shape[:2])
    foreground = body > threshold
    markers = np.where(foreground, coarse, 0)
    if markers.max() == 0:
        return coarse
    grown = watershed(-body, markers, mask=foreground).astype(np.int32)
    lost = np.setdiff1d(np.unique(coarse), np.unique(grown))  # an object with no pixel above threshold
    if lost.size:
        grown = np.where(np.isin(coarse, lost) & (grown == 0), coarse, grown)
    return grown
