"""Combining the probability maps of several members into one map that the
shared post-processing turns into nuclei, once.

Each member's body channel is first rescaled so that its own calibrated
threshold sits at 0.5 (piecewise linear, monotone): "foreground" then means
the same thing, > 0.5, for every member. Then, pixel by pixel:

- intersect: foreground where at least `quorum` members (default: all) say
  foreground. The q-th largest member body is > 0.5 exactly there, so the
  combined body is that order statistic (all members: the minimum, the
  fuzzy intersection). The border channel is combined the same way on the
  interior (1 - border): interior where at least q members see interior.
- vote: intersect with a majority quorum (more than half the members).
- mean: the average of the rescaled maps.
- nuclei: no map is post-processed as one; each member's rescaled map
  gives its own nuclei and they are fused (nucjax.fusion): a nucleus where
  at least `quorum` members (default a majority) found it. Its post-processing
  is calibrated on single members' maps, which is all a fold ensemble can
  be calibrated on. As one map (Segmenter.probabilities) it is the mean.

At 0.5 the combined body is exactly the combination of the members'
thresholded masks (the report's intersection); as a map it keeps enough
shading for the watershed, and its thresholds are re-calibrated on
validation data like any model's.
"""

from __future__ import annotations

import numpy as np

COMBINATIONS = ("intersect", "vote", "mean", "nuclei")
#: The combinations that fuse each member's nuclei instead of post-processing one combined map.
FUSED = ("nuclei",)


def rescaled(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W, K) maps with the body channel moved so threshold -> 0.5 (0 -> 0, 1 -> 1)."""
    maps = np.array(probabilities, dtype=np.float32, copy=True)
    body = maps[..., 0]
    t = min(max(float(threshold), 1e-3), 1 - 1e-3)
    maps[..., 0] = np.where(body <= t, body * (0.5 / t), 0.5 + (body - t) * (0.5 / (1 - t)))
    return maps


def quorum_for(method: str, members: int, quorum: int | None = None) -> int:
    """How many members must agree on a pixel: q for intersect (default all), a majority for vote;
    on a nucleus for nuclei: q (default a majority)."""
    if method == "vote" or (method == "nuclei" and quorum is None):
        return members // 2 + 1
    if method in ("intersect", "nuclei"):
        q = members if quorum is None else quorum
        if not 1 <= q <= members:
            raise ValueError(f"--quorum must be between 1 and the {members} members, got {q}")
        return q
    return members


def group_quorum(quorum: int | None, members: int) -> int | None:
    """The --quorum a group of members uses: a group smaller than the quorum
    (while greedy selection grows one) needs all its members."""
    return quorum if quorum is not None and quorum <= members else None


def combine(member_maps: list[np.ndarray], thresholds: list[float], method: str, quorum: int | None = None) -> np.ndarray:
    """One (H, W, K) map from the members' (H, W, K_i) probabilities.

    thresholds: each member's calibrated body threshold. K is the channels
    every member has (a body-only member drops the border channel).
    """
    if method not in COMBINATIONS:
        raise ValueError(f"unknown combination '{method}'; choose one of {', '.join(COMBINATIONS)}")
    if not member_maps or len(member_maps) != len(thresholds):
        raise ValueError("combine needs one threshold per member, and at least one member")
    channels = min(m.shape[-1] if m.ndim == 3 else 1 for m in member_maps)
    stack = np.stack([rescaled(m if m.ndim == 3 else m[..., None], t)[..., :channels]
                      for m, t in zip(member_maps, thresholds)])
    if method in ("mean", *FUSED):
        return stack.mean(axis=0)
    q = quorum_for(method, len(member_maps), quorum)
    n = len(member_maps)
    body = np.partition(stack[..., 0], n - q, axis=0)[n - q]  # the q-th largest
    if channels == 1:
        return body[..., None]
    border = np.partition(stack[..., 1], q - 1, axis=0)[q - 1]  # the q-th smallest: interior for q members
    return np.stack([body, border], axis=-1)
