"""Kaggle run-length encoding of binary masks.

Kaggle numbers pixels column-major (top to bottom, then left to right),
starting at 1, and writes a mask as "start length start length ...".
"""

from __future__ import annotations

import csv

import numpy as np


class RLEError(ValueError):
    """An encoded mask that cannot be decoded: odd count, unsorted, out of range."""


def rle_encode(mask: np.ndarray) -> str:
    """Encode a (H, W) mask (nonzero = object) as Kaggle RLE; '' when empty.

    >>> rle_encode(np.array([[1, 0], [1, 1]]))
    '1 3'
    """
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    pixels = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[False], pixels, [False]]).astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def rle_encode_labels(labels: np.ndarray) -> list[str]:
    """Kaggle RLE of every object of an (H, W) label image, ids ascending:
    the same strings as rle_encode(labels == id) for each id, from one pass
    over the pixels (no mask per object: a 4000 x 4000 image with hundreds
    of nuclei would need gigabytes).

    >>> rle_encode_labels(np.array([[1, 2], [1, 2]]))
    ['1 2', '3 2']
    """
    if labels.ndim != 2:
        raise ValueError(f"rle_encode_labels needs a 2-D label image, got shape {labels.shape}")
    flat = np.asarray(labels).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    ids = flat[starts]
    keep = ids != 0
    starts, lengths, ids = starts[keep], lengths[keep], ids[keep]
    order = np.argsort(ids, kind="stable")  # by id; each id's runs stay in pixel order
    starts, lengths, ids = starts[order], lengths[order], ids[order]
    bounds = np.flatnonzero(np.diff(ids)) + 1
    return [" ".join(f"{a + 1} {b}" for a, b in zip(run_starts, run_lengths))
            for run_starts, run_lengths in zip(np.split(starts, bounds), np.split(lengths, bounds)) if run_starts.size]


def rle_runs(encoded: str) -> np.ndarray:
    """Parse and validate 'start length ...' into an (N, 2) int64 array of runs.

    Starts are 1-indexed, strictly increasing, lengths positive, and runs
    may not overlap. Raises RLEError saying what is wrong.
    """
    fields = encoded.split()
    if not fields:
        return np.zeros((0, 2), np.int64)
    try:
        values = np.array([int(f) for f in fields], dtype=np.int64)
    except ValueError:
        bad = next(f for f in fields if not f.lstrip("-").isdigit())
        raise RLEError(f"'{bad}' is not an integer") from None
    if values.size % 2:
        raise RLEError(f"odd number of values ({values.size}): RLE needs start/length pairs")
    runs = values.reshape(-1, 2)
    starts, lengths = runs[:, 0], runs[:, 1]
    if (starts < 1).any():
        raise RLEError(f"start {starts[starts < 1][0]} is below 1 (Kaggle RLE is 1-indexed)")
    if (lengths < 1).any():
        raise RLEError(f"run length {lengths[lengths < 1][0]} is not positive")
    if len(runs) > 1:
        ends = starts + lengths  # one past the last pixel of each run
        unsorted = np.flatnonzero(starts[1:] <= starts[:-1])
        if unsorted.size:
            i = unsorted[0]
            raise RLEError(f"runs are not sorted: start {starts[i + 1]} follows {starts[i]}")
        overlapping = np.flatnonzero(starts[1:] < ends[:-1])
        if overlapping.size:
            i = overlapping[0]
            raise RLEError(f"run at {starts[i + 1]} overlaps the run {starts[i]}+{lengths[i]}")
    return runs


def rle_pixels(encoded: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, cols) of the pixels an RLE string covers in an image of shape (H, W).

    Costs O(object pixels), not O(image pixels), so decoding thousands of
    small objects stays cheap. Raises RLEError when invalid or when a run
    leaves the image.
    """
    height, width = shape
    runs = rle_runs(encoded)
    if not len(runs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    last = runs[-1, 0] + runs[-1, 1] - 1
    if last > height * width:
        raise RLEError(f"run ends at pixel {last}, past the image's {height * width} pixels ({height}x{width})")
    starts, lengths = runs[:, 0] - 1, runs[:, 1]
    # Each pixel's offset inside its run, added to its run's start.
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    column_major = np.repeat(starts, lengths) + offsets
    return column_major % height, column_major // height


def rle_decode(encoded: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode Kaggle RLE into a (H, W) bool mask; raises RLEError when invalid
    or when a run leaves the image."""
    mask = np.zeros(shape, dtype=bool)
    mask[rle_pixels(encoded, shape)] = True
    return mask


def rle_csv_reader(handle):
    """A csv reader for files of RLE strings, whose fields can outgrow csv's
    default 128 KiB limit (a large nucleus in a 1388x1040 image)."""
    csv.field_size_limit(2**31 - 1)
    return csv.reader(handle)
