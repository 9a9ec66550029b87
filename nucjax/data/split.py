"""Image kinds, detected the reference report's way; acquisition groups
(images of one experiment); and two fixed splits: stratified by kind, or
by group, which holds out whole experiments; and group k-fold, where every
group is validated once (fold_split).

A random or stratified split puts images of one experiment on both sides
and so rewards memorising it; images from other experiments, as in the
DSB2018 test set, score far lower. The group split measures that case.
"""

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


#: How far apart (in the look features) two images of one kind and size can be and still be one group.
GROUP_DISTANCE = 0.5
SPLITS = ("group", "stratified")


def look_features(image: np.ndarray) -> np.ndarray:
    """What tells experiments of one kind and size apart: log mean and log
    spread of the grey image, and the mean of each colour channel (0..1)."""
    grey = to_grey(image).astype(np.float32)
    return np.array([np.log1p(grey.mean()), np.log1p(grey.std()), *(image[..., :3].reshape(-1, 3).mean(0) / 255)])


def image_descriptor(image: np.ndarray) -> tuple:
    """What grouping needs of an image: (kind, (h, w), look_features)."""
    return image_kind(image), tuple(image.shape[:2]), look_features(image)


def acquisition_groups(image_ids, images=None, descriptors=None) -> dict[str, str]:
    """{image id: group name}: images of one experiment share a group.

    Images (or their image_descriptor, to keep no image in memory) are
    first bucketed by kind and size (an experiment images with one
    microscope and camera), then each bucket is clustered by look (average
    linkage over look_features, cut at GROUP_DISTANCE). Names read
    '<kind>-<h>x<w>-<n>', n counting the bucket's groups from the largest.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    image_ids = list(image_ids)
    descriptors = list(descriptors) if descriptors is not None else [image_descriptor(i) for i in images]
    buckets: dict[tuple, list[int]] = {}
    for index, (kind, shape, _) in enumerate(descriptors):
        buckets.setdefault((kind, shape), []).append(index)
    groups = {}
    for (kind, (h, w)), members in sorted(buckets.items()):
        members = sorted(members, key=lambda i: image_ids[i])
        if len(members) > 1:
            features = np.stack([descriptors[i][2] for i in members])
            clusters = fcluster(linkage(features, "average"), GROUP_DISTANCE, "distance")
        else:
            clusters = np.ones(1, int)
        # Number the clusters by size (largest first), ties by their first id: stable names.
        order = sorted(set(clusters), key=lambda c: (-int((clusters == c).sum()), min(image_ids[m] for m, k in zip(members, clusters) if k == c)))
        names = {c: f"{kind}-{h}x{w}-{n}" for n, c in enumerate(order, start=1)}
        groups.update({image_ids[m]: names[c] for m, c in zip(members, clusters)})
    return groups


def run_groups(*parts) -> dict[str, str]:
    """{image id: group name} for a run's samples (its training and
    validation parts, in that order, and any other part to name too):
    clustered over all of them at once, so a run's training, its search
    and nucjax.predict --split name the same experiment alike."""
    everything = [s for part in parts for s in part]
    return acquisition_groups([s.image_id for s in everything], [s.image for s in everything])


def group_split(image_ids, kinds, groups, val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0) -> Split:
    """Split ids so that no group has images on two sides.

    Within each kind, groups are ordered by a hash of (seed, group) and
    given to test, then val, while the part holds fewer than its share of
    the kind's images; a group that would overshoot its share by more than
    half is passed over (the largest experiments stay in training). A part
    that got nothing that way takes the kind's smallest group, when that
    is under half the kind and leaves a group for training (and for val).
    A kind with a single group trains only: it cannot be held out from itself.
    """
    image_ids, kinds = list(image_ids), list(kinds)
    if not (len(image_ids) == len(kinds) == len(groups) if not isinstance(groups, dict) else len(image_ids) == len(kinds)):
        raise ValueError("need a kind and a group for every id")
    group_of = groups if isinstance(groups, dict) else dict(zip(image_ids, groups))
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got val={val_fraction} test={test_fraction}")
    parts = {"train": [], "val": [], "test": []}
    for kind in sorted(set(kinds)):
        members = [i for i, k in zip(image_ids, kinds) if k == kind]
        by_group: dict[str, list[str]] = {}
        for image_id in members:
            by_group.setdefault(group_of[image_id], []).append(image_id)
        order = sorted(by_group, key=lambda g: _rank(g, seed))
        taken = set()
        for part, fraction in (("test", test_fraction), ("val", val_fraction)):
            target = len(members) * fraction
            count = 0
            for group in order:
                if group in taken or count >= target or len(taken) == len(by_group) - 1:
                    continue
                size = len(by_group[group])
                if count + size > 1.5 * target:
                    continue
                taken.add(group)
                parts[part] += by_group[group]
                count += size
            # Every group overshoots: the smallest that leaves one for training (and one for val after test).
            spare = [g for g in order if g not in taken]
            if fraction > 0 and count == 0 and len(spare) > (2 if part == "test" and val_fraction > 0 else 1):
                smallest = min(spare, key=lambda g: (len(by_group[g]), order.index(g)))
                if len(by_group[smallest]) < len(members) / 2:
                    taken.add(smallest)
                    parts[part] += by_group[smallest]
        parts["train"] += [i for g in order if g not in taken for i in by_group[g]]
    return Split(*(tuple(sorted(parts[p])) for p in ("train", "val", "test")))


def fold_assignment(image_ids, kinds, groups, folds: int, seed: int = 0) -> dict[str, int]:
    """{group: fold} for k-fold cross-validation by group: every group in
    exactly one of `folds` folds, balanced in images and in kinds.

    Kinds are dealt largest first; within a kind, groups largest first
    (ties by a hash of (seed, group)), each to the fold holding fewest
    images of that kind, then fewest in all, then the first in an order
    the seed rotates. ValueError when there are fewer groups than folds.
    """
    group_of = groups if isinstance(groups, dict) else dict(zip(image_ids, groups))
    kind_of, size = {}, {}
    for image_id, kind in zip(image_ids, kinds):
        kind_of[group_of[image_id]] = kind
        size[group_of[image_id]] = size.get(group_of[image_id], 0) + 1
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {folds}")
    if folds > len(size):
        raise ValueError(f"{folds} folds but only {len(size)} acquisition groups to deal into them; use at most {len(size)}")
    totals = [0] * folds
    order = [(f + seed) % folds for f in range(folds)]
    by_kind = sorted(set(kind_of.values()), key=lambda k: (-sum(size[g] for g in size if kind_of[g] == k), k))
    assigned = {}
    for kind in by_kind:
        counts = [0] * folds
        for group in sorted((g for g in size if kind_of[g] == kind), key=lambda g: (-size[g], _rank(g, seed))):
            fold = min(range(folds), key=lambda f: (counts[f], totals[f], order.index(f)))
            assigned[group] = fold
            counts[fold] += size[group]
            totals[fold] += size[group]
    return assigned


def fold_split(image_ids, kinds, groups, folds: int, fold: int, val_fraction: float = 0.15, test_fraction: float = 0.0,
               seed: int = 0) -> Split:
    """Fold `fold` of group k-fold: val is that fold's groups, train the
    others'; test holds the same images group_split would hold back with
    these fractions, so a search and its fold refit keep one test set."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    group_of = groups if isinstance(groups, dict) else dict(zip(image_ids, groups))
    test = set(group_split(image_ids, kinds, group_of, val_fraction, test_fraction, seed).test) if test_fraction else set()
    rest = [(i, k) for i, k in zip(image_ids, kinds) if i not in test]
    assigned = fold_assignment([i for i, _ in rest], [k for _, k in rest], group_of, folds, seed)
    parts = {"train": [], "val": []}
    for image_id, _ in rest:
        parts["val" if assigned[group_of[image_id]] == fold else "train"].append(image_id)
    return Split(tuple(sorted(parts["train"])), tuple(sorted(parts["val"])), tuple(sorted(test)))


def split_samples(samples, val_fraction: float = 0.15, test_fraction: float = 0.0, seed: int = 0,
                  method: str = "stratified", folds: int = 0, fold: int = 0) -> tuple[list, list, list]:
    """(train, val, test) lists of samples (anything with .image_id and an
    RGB .image): method 'stratified' (stratified_split over image kinds) or
    'group' (group_split over acquisition_groups); with folds, fold `fold`
    of group k-fold (fold_split; method must be 'group')."""
    samples = list(samples)
    ids, kinds = [s.image_id for s in samples], [image_kind(s.image) for s in samples]
    if folds and method != "group":
        raise ValueError(f"k-fold holds out acquisition groups: it needs the group split, not '{method}'")
    if folds:
        groups = acquisition_groups(ids, [s.image for s in samples])
        split = fold_split(ids, kinds, groups, folds, fold, val_fraction, test_fraction, seed)
    elif method == "group":
        split = group_split(ids, kinds, acquisition_groups(ids, [s.image for s in samples]), val_fraction, test_fraction, seed)
    elif method == "stratified":
        split = stratified_split(ids, kinds, val_fraction, test_fraction, seed)
    else:
        raise ValueError(f"unknown split '{method}'; choose one of {', '.join(SPLITS)}")
    return tuple([s for s in samples if s.image_id in set(part)] for part in (split.train, split.val, split.test))
