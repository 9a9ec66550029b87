"""Image kinds, detected the reference report's way, and a fixed stratified split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from nucjax.preprocess import INVERT_MEAN, is_colour, to_grey

FLUORESCENCE = "fluorescence"  # grey, white nuclei on black: most of DSB2018
BRIGHTFIELD = "brightfield"  # grey, dark nuclei on white
HISTOLOGY = "histology"  # colour, stained tissue
KINDS = (FLUORESCENCE, BRIGHTFIELD, HISTOLOGY)


def image_kind(image: np.ndarray) -> str:
    """Kind of an (H, W, 3) uint8 image: colour is histology; a grey image is
    bright-field when its mean is above the report's inversion threshold."""
    if is_colour(image):
        return HISTOLOGY
    return BRIGHTFIELD if to_grey(image).mean() > INVERT_MEAN else FLUORESCENCE


@dataclass(frozen=True)
class Split:
    """Image ids of each part of a split, each tuple sorted."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def part_of(self, image_id: str) -> str:
        for name in ("train", "val", "test"):
            if image_id in getattr(self, name):
                return name
        raise KeyError(image_id)


def _rank(image_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def stratified_split(
    image_ids, kinds, val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0
) -> Split:
    """Split ids so each kind is represented in proportion in every part.

    Within a kind, ids are ordered by a hash of (seed, id), the first
    round(n * test_fraction) go to test, the next round(n * val_fraction)
    to val, the rest to train. An image keeps its part when others are
    added or removed, unless its kind's counts shift the boundary. A kind
    with at least two images puts at least one in val (when val_fraction
    > 0), so rare kinds are always validated.
    """
    image_ids, kinds = list(image_ids), list(kinds)
    if len(image_ids) != len(kinds):
        raise ValueError(f"{len(image_ids)} ids but {len(kinds)} kinds")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("image ids must be unique")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got val={val_fraction} test={test_fraction}")
    parts = {"train": [], "val": [], "test": []}
    for kind in sorted(set(kinds)):
        members = sorted((i for i, k in zip(image_ids, kinds) if k == kind), key=lambda i: _rank(i, seed))
        n = len(members)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if val_fraction > 0 and n >= 2:
            n_val = max(n_val, 1)
        n_test = min(n_test, max(n - n_val - 1, 0))
        parts["test"] += members[:n_test]
        parts["val"] += members[n_test : n_test + n_val]
        parts["train"] += members[n_test + n_val :]
    return Split(*(tuple(sorted(parts[p])) for p in ("train", "val", "test")))


def split_samples(samples, val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0) -> tuple[list, list, list]:
    """(train, val, test) lists of samples (anything with .image_id and an
    RGB .image), split by stratified_split over their image kinds."""
    samples = list(samples)
    split = stratified_split([s.image_id for s in samples], [image_kind(s.image) for s in samples],
                             val_fraction, test_fraction, seed)
    return tuple([s for s in samples if s.image_id in set(ids)] for ids in (split.train, split.val, split.test))
