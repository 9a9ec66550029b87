"""Combining several members' nuclei (label images) into one label image.

A fold ensemble has no images that none of its members trained on, so its
post-processing can only be calibrated on single-member maps (each
out-of-fold image by the one model that did not see it). A mean of five
maps is softer than any one of them, and thresholds tuned on one model's
maps are off for it. Fusing the members' nuclei instead keeps every
member's maps as the calibration saw them: each member's nuclei come from
its own map and the shared calibrated post-processing, and only then are
they combined:

- nuclei of different members that overlap with IoU > 0.5 are the same
  nucleus (above 0.5 a match is unique, as in the Kaggle metric);
- a nucleus is kept when at least `quorum` members found it (default: a
  majority);
- its pixels are those at least half of the members that found it agree
  on; a pixel two kept nuclei claim goes to the one more members put it in.
"""

from __future__ import annotations

import numpy as np

from nucjax.combine import quorum_for
from nucjax.metrics import compact_labels, iou_matrix

#: Overlap above which two members' nuclei are the same nucleus (the Kaggle metric's first threshold).
SAME_NUCLEUS_IOU = 0.5


def instance_pixels(labels: np.ndarray) -> list[np.ndarray]:
    """The flat pixel indices of each nucleus 1..n of a compact label image (compact_labels)."""
    flat, areas = compact_labels(labels)
    order = np.argsort(flat, kind="stable")
    bounds = np.cumsum(areas)
    return [order[bounds[i - 1]:bounds[i]] for i in range(1, len(areas))]


def _clusters(members: list[np.ndarray], counts: list[int]) -> list[list[int]]:
    """Groups of nuclei (global indices: member offsets + local index) that
    members' pairwise matches (IoU > SAME_NUCLEUS_IOU) join."""
    offsets = np.cumsum([0, *counts])
    parent = np.arange(offsets[-1])

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(len(members)):
        for b in range(a + 1, len(members)):
            if not counts[a] or not counts[b]:
                continue
            rows, cols = np.nonzero(iou_matrix(members[a], members[b]) > SAME_NUCLEUS_IOU)
            for i, j in zip(rows + offsets[a], cols + offsets[b]):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(offsets[-1]):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def fuse_instances(members: list[np.ndarray], quorum: int | None = None) -> np.ndarray:
    """One (H, W) int32 label image from members' label images of one
    image (0 background): the nuclei at least `quorum` of them found
    (default a majority), each of the pixels at least half of its finders
    agree on. Deterministic: nuclei are numbered by support, then by
    position."""
    if not members:
        raise ValueError("fuse_instances needs at least one member")
    shape = np.shape(members[0])
    if any(np.shape(m) != shape for m in members):
        raise ValueError(f"members differ in shape: {sorted({np.shape(m) for m in members})}")
    quorum = quorum_for("nuclei", len(members), quorum)
    pixels = [instance_pixels(m) for m in members]
    owner = np.repeat(np.arange(len(members)), [len(p) for p in pixels])
    flat_pixels = [p for member in pixels for p in member]
    kept = []
    for cluster in _clusters(members, [len(p) for p in pixels]):
        support = len(set(owner[cluster]))
        if support < quorum:
            continue
        where, votes = np.unique(np.concatenate([flat_pixels[i] for i in cluster]), return_counts=True)
        agreed = 2 * votes >= support
        if agreed.any():
            kept.append((support, int(where[agreed][0]), where[agreed], votes[agreed]))
    fused = np.zeros(int(np.prod(shape)), np.int32)
    best_votes = np.zeros(fused.size, np.int32)
    # Most supported first; a contested pixel goes to the nucleus more members put it in.
    for label, (_, _, where, votes) in enumerate(sorted(kept, key=lambda k: (-k[0], k[1])), start=1):
        take = votes > best_votes[where]
        fused[where[take]] = label
        best_votes[where[take]] = votes[take]
    return compact_labels(fused)[0].astype(np.int32, copy=False).reshape(shape)  # a nucleus wholly claimed leaves no gap
