"""Fusing members' nuclei (nucjax.fusion): a nucleus kept where a quorum of
members found it, its pixels those most of its finders agree on."""

from __future__ import annotations

import numpy as np
import pytest

from nucjax.fusion import fuse_instances
from nucjax.metrics import image_score


def squares(shape, boxes) -> np.ndarray:
    """A label image with one nucleus per {label: (y0, y1, x0, x1)} box."""
    labels = np.zeros(shape, np.int32)
    for label, (y0, y1, x0, x1) in boxes.items():
        labels[y0:y1, x0:x1] = label
    return labels


A = (2, 8, 2, 8)  # 36 px
B = (10, 16, 10, 16)


def test_a_nucleus_most_members_found_is_kept_and_one_member_alone_is_dropped():
    first = squares((20, 20), {1: A, 2: B})
    wider = squares((20, 20), {7: (2, 8, 2, 9), 3: B})  # other numbers: matched by overlap, not by label
    missing = squares((20, 20), {4: A, 9: (0, 2, 15, 18)})  # misses B, adds a nucleus no one else sees
    fused = fuse_instances([first, wider, missing])
    assert fused.max() == 2 and fused.dtype == np.int32
    assert (fused[0:2, 15:18] == 0).all()  # found by one of three
    nucleus_a = fused == fused[3, 3]
    assert nucleus_a.sum() == 36  # the column only `wider` adds is one vote of three
    assert (fused[10:16, 10:16] == fused[12, 12]).all() and fused[12, 12] not in (0, fused[3, 3])
    # A quorum of one keeps every nucleus, of three only those all found.
    assert fuse_instances([first, wider, missing], quorum=1).max() == 3
    everyone = fuse_instances([first, wider, missing], quorum=3)
    assert everyone.max() == 1 and (everyone > 0).sum() == 36


def test_identical_members_fuse_to_their_own_nuclei():
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int32)
    for label in range(1, 15):
        y, x = rng.integers(0, 58, 2)
        labels[y:y + 6, x:x + 6] = label
    fused = fuse_instances([labels] * 5)
    assert image_score(labels, fused).score == 1.0


def test_a_pixel_two_kept_nuclei_claim_goes_to_the_one_more_members_put_it_in():
    # Two members split a pair of touching nuclei at column 8, a third at column 9.
    left, right = (2, 8, 2, 8), (2, 8, 8, 14)
    split_8 = squares((12, 16), {1: left, 2: right})
    split_9 = squares((12, 16), {1: (2, 8, 2, 9), 2: (2, 8, 9, 14)})
    fused = fuse_instances([split_8, split_8, split_9])
    assert fused.max() == 2
    assert (fused[2:8, 8] == fused[4, 10]).all()  # column 8: right in two of three
    assert (fused[2:8, 2:8] == fused[4, 4]).all() and fused[4, 4] != fused[4, 10]


def test_no_nuclei_and_bad_members_are_handled():
    empty = np.zeros((8, 8), np.int32)
    assert not fuse_instances([empty, empty, empty]).any()
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_instances([empty, np.zeros((8, 9), np.int32)])
    with pytest.raises(ValueError, match="quorum"):
        fuse_instances([empty, empty], quorum=3)
    with pytest.raises(ValueError, match="at least one"):
        fuse_instances([])


def discs(size: int, centres) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for label, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = label
    return labels


def test_an_ensemble_that_fuses_nuclei_reads_each_member_at_its_own_threshold_and_drops_a_lone_nucleus():
    """Three members calling nuclei at 0.3, 0.5 and 0.7; the last also sees
    a nucleus that is not there. Each member's map is post-processed at its
    own threshold (rescaled to 0.5), and the lone nucleus is outvoted; the
    calibration tunes on the members' own maps and scores the fused nuclei."""
    from nucjax.config import ExperimentConfig
    from nucjax.segmenter import LabelledMaps, Model, Segmenter, calibrate_segmenter

    centres = ((12, 12), (12, 34), (34, 20))
    truth = discs(48, centres)
    image = np.repeat((truth > 0).astype(np.uint8)[..., None] * 200, 3, axis=-1)
    models, maps = [], []
    for threshold, seen in ((0.3, truth), (0.5, truth), (0.7, discs(48, (*centres, (38, 40))))):
        config = ExperimentConfig().replace(postprocess={"threshold": threshold})
        models.append(Model(f"at {threshold}", None, config, 0.0, forward=None))
        body = np.where(seen > 0, threshold + 0.2, threshold - 0.25).astype(np.float32)
        maps.append(np.stack([body, np.zeros_like(body)], axis=-1))
    fused = Segmenter.of(models, combine="nuclei")
    found = fused.nuclei(image, 1.0, maps)
    assert found.max() == 3 and image_score(truth, found).score == 1.0
    assert fuse_instances([fused.labels(image, 1.0, maps[2])]).max() == 4  # the third member alone keeps it
    postprocess, scores = calibrate_segmenter(fused, [LabelledMaps(image, truth, 1.0, maps)])
    assert scores == [image_score(truth, fused.nuclei(image, 1.0, maps, postprocess)).score] == [1.0]
