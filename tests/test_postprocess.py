import dataclasses

import cv2
import numpy as np
import pytest

from nucjax.metrics import image_score
from nucjax.postprocess import (
    METHODS,
    MIN_KIND_IMAGES,
    PostprocessConfig,
    calibrate,
    components,
    instances,
    reference_instances,
)
from nucjax.targets import border_target


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, start=1):
        labels[((yy - y) ** 2 + (xx - x) ** 2 <= radius**2) & (labels == 0)] = i
    return labels


def maps_of(labels, blur=1.0):
    """Probability maps a good two-channel model would give for these labels."""
    body = cv2.GaussianBlur((labels > 0).astype(np.float32), (0, 0), blur)
    border = np.clip(cv2.GaussianBlur(np.asarray(border_target(labels)), (0, 0), blur) * 1.5, 0, 1)
    return np.stack([body, border], axis=-1)


TOUCHING = discs((60, 80), [(30, 28), (30, 50)], 12)  # overlapping discs: a merged blob


@pytest.mark.parametrize("method", ["distance", "border"])
def test_touching_discs_are_split(method):
    labels = instances(maps_of(TOUCHING), PostprocessConfig(method=method))
    assert labels.max() == 2
    assert image_score(TOUCHING, labels).score >= 0.7


def test_a_small_nucleus_beside_a_large_one_is_kept_by_distance_peaks():
    # Its own distance peak is lower than the large neighbour's within
    # peak_radius, so it has no marker: it is kept as one object, not dropped.
    maps = np.zeros((60, 60, 1), np.float32)
    maps[10:40, 10:40] = 1
    maps[20:26, 42:48] = 1  # 2 px from the large one
    out = instances(maps, PostprocessConfig(method="distance", min_size=0, peak_radius=9))
    assert out.max() == 2 and out[22, 44] > 0 and out[22, 44] != out[25, 25]


def test_connected_components_cannot_split_them():
    assert instances(maps_of(TOUCHING), PostprocessConfig(method="cc")).max() == 1

def test_a_nucleus_with_no_seed_is_kept_whole_beside_seeded_ones():
    # A dim or thick-bordered nucleus never passes the seed threshold: it is
    # kept as one object, not dropped, and the seeded pair is still split.
    labels = TOUCHING.copy()
    labels[discs(TOUCHING.shape, [(12, 70)], 7) > 0] = 3
    maps = maps_of(labels)
    maps[..., 1][labels == 3] = 0.6  # body x (1 - border) <= 0.4 there
    out = instances(maps, PostprocessConfig(method="border", seed_threshold=0.7))
    assert out.max() == 3
    assert out[12, 70] > 0 and set(np.unique(out[labels == 3])) <= {0, out[12, 70]}
    assert image_score(labels, out).score >= 0.6



@pytest.mark.parametrize("method", ["cc", "distance", "border", "reference"])
def test_a_lone_nucleus_stays_whole(method):
    lone = discs((64, 64), [(32, 32)], 14)
    labels = instances(maps_of(lone), PostprocessConfig(method=method))
    assert labels.max() == 1
    assert image_score(lone, labels).score >= 0.6


def test_an_elongated_nucleus_is_not_cut_by_distance_peaks():
    labels = np.zeros((40, 90), np.int32)
    cv2.ellipse(labels, (45, 20), (35, 9), 0, 0, 360, 1, -1)
    assert instances(maps_of(labels)[..., :1], PostprocessConfig(method="distance", peak_radius=9)).max() == 1


@pytest.mark.parametrize("method", ["cc", "distance", "border"])
def test_holes_are_filled(method):
    ring = discs((50, 50), [(25, 25)], 15)
    ring[discs((50, 50), [(25, 25)], 4) > 0] = 0
    maps = np.stack([ring.astype(np.float32), np.zeros(ring.shape, np.float32)], axis=-1)
    labels = instances(maps, PostprocessConfig(method=method))
    assert labels.max() == 1 and labels[25, 25] == 1
    unfilled = instances(maps, PostprocessConfig(method=method, fill_holes=False))
    assert unfilled[25, 25] == 0


def test_objects_under_the_minimum_size_vanish():
    labels = discs((50, 50), [(10, 10), (35, 35)], 2)
    labels[discs((50, 50), [(35, 35)], 8) > 0] = 2
    maps = maps_of(labels, blur=0.3)
    out = instances(maps, PostprocessConfig(method="border", min_size=30))
    assert out.max() == 1 and out[35, 35] == 1 and out[10, 10] == 0


def test_dim_objects_are_dropped_when_asked():
    maps = np.zeros((40, 40, 2), np.float32)
    maps[5:15, 5:15, 0] = 1.0
    maps[25:35, 25:35, 0] = 0.6
    config = PostprocessConfig(method="cc", threshold=0.5)
    assert instances(maps, config).max() == 2
    assert instances(maps, PostprocessConfig(method="cc", threshold=0.5, min_mean_probability=0.8)).max() == 1


@pytest.mark.parametrize("method", [m for m in METHODS if m != "reference"])
def test_output_never_overlaps_and_labels_are_consecutive(method):
    rng = np.random.default_rng(3)
    labels = discs((96, 96), rng.integers(8, 88, (14, 2)), 7)
    out = instances(maps_of(labels), PostprocessConfig(method=method))
    assert out.dtype == np.int32 and out.shape == labels.shape
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))
    for label in range(1, out.max() + 1):  # one connected piece each
        assert cv2.connectedComponents((out == label).astype(np.uint8), connectivity=8)[0] == 2


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_full_maps(method):
    empty = np.zeros((32, 32, 2), np.float32)
    full = np.ones((32, 32, 2), np.float32)
    full[..., 1] = 0
    assert instances(empty, PostprocessConfig(method=method)).max() == 0
    out = instances(full, PostprocessConfig(method=method))
    assert out.max() <= 2 and out.shape == (32, 32)


def test_border_method_needs_a_border_channel():
    with pytest.raises(ValueError, match="needs a border channel"):
        instances(np.zeros((8, 8, 1), np.float32), PostprocessConfig(method="border"))


def test_auto_picks_border_or_distance():
    two = instances(maps_of(TOUCHING), PostprocessConfig(method="auto"))
    assert np.array_equal(two, instances(maps_of(TOUCHING), PostprocessConfig(method="border")))
    one = instances(maps_of(TOUCHING)[..., :1], PostprocessConfig(method="auto"))
    assert np.array_equal(one, instances(maps_of(TOUCHING)[..., :1], PostprocessConfig(method="distance")))


def test_reference_follows_the_reports_steps():
    """On a fixed picture, each of the report's steps by hand, then the method."""
    body = np.zeros((60, 90), np.float32)
    body[discs((60, 90), [(30, 25), (30, 47)], 13) > 0] = 0.9  # two touching nuclei
    body[5:7, 70:72] = 0.9  # a speck the openings remove
    body[40:55, 65:85] = 0.3  # below the 0.4 threshold
    image = np.repeat((body * 255).astype(np.uint8)[..., None], 3, axis=2)

    mask = (body > 0.4).astype(np.uint8)
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8), iterations=2)
    opened = cv2.morphologyEx(opened, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    distance = cv2.distanceTransform(opened, cv2.DIST_C, 3)
    sure = (distance > 0.2 * distance.max()).astype(np.uint8)
    assert opened[5:7, 70:72].sum() == 0

    labels = reference_instances(body, image)
    assert labels.max() == cv2.connectedComponents(sure)[0] - 1
    assert labels[6, 71] == 0 and labels[45, 75] == 0
    assert np.all(labels[sure > 0] > 0)  # every sure pixel stays in a nucleus
    assert not np.any(labels[opened == 0])  # nothing outside the opened mask


def test_calibration_finds_the_known_best_threshold():
    # Nuclei at probability 0.65 beside noise at 0.45: only thresholds in
    # between give the truth, and 0.5 is the one grid value there.
    rng = np.random.default_rng(0)
    truths, maps = [], []
    for _ in range(3):
        labels = discs((64, 64), [(12, 12), (12, 50), (50, 12), (50, 50)] if _ % 2 else [(20, 32), (45, 32)], 6)
        body = np.where(rng.random(labels.shape) < 0.3, 0.45, 0.0).astype(np.float32)  # speckle
        body[labels > 0] = 0.65
        truths.append(labels)
        maps.append(body[..., None])
    best, score = calibrate(maps, truths, PostprocessConfig(method="cc", min_size=1), {"threshold": (0.3, 0.4, 0.5, 0.7)})
    assert best.threshold == 0.5
    assert score == 1.0


def test_calibration_default_grid_improves_or_keeps_the_score():
    labels = discs((64, 96), [(30, 25), (30, 45), (30, 70)], 11)
    maps = [maps_of(labels, blur=2.0)]
    base = PostprocessConfig(seed_threshold=0.95)
    best, score = calibrate(maps, [labels], base)
    assert score >= image_score(labels, instances(maps[0], base)).score
    assert score > 0.8


def test_components_drop_small_pieces():
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True
    mask[4:8, 4:8] = True
    assert components(mask, min_size=2).max() == 1


def two_kinds(fluorescence: int, histology: int, seed: int = 0):
    """Maps and truths of images of two kinds: bright nuclei (0.65) in speckle
    (0.45), which only a threshold of 0.5 separates, and pale nuclei (0.35)
    on a clean background, which only thresholds under 0.35 find."""
    rng = np.random.default_rng(seed)
    maps, truths, kinds = [], [], []
    for index in range(fluorescence + histology):
        labels = discs((48, 48), [(12, 12), (12, 36), (36, 12), (36, 36)][: 2 + index % 3], 6)
        bright = index < fluorescence
        body = np.where(rng.random(labels.shape) < 0.3, 0.45, 0.0).astype(np.float32) if bright else np.zeros(labels.shape, np.float32)
        body[labels > 0] = 0.65 if bright else 0.35
        maps.append(body[..., None])
        truths.append(labels)
        kinds.append("fluorescence" if bright else "histology")
    return maps, truths, kinds


def test_a_kind_whose_maps_run_lower_gets_its_own_threshold():
    maps, truths, kinds = two_kinds(10, 8)
    grid = {"threshold": (0.3, 0.5, 0.7), "min_size": (5,)}
    base = PostprocessConfig(method="cc", min_size=5)
    shared, shared_score = calibrate(maps, truths, base, grid)
    best, score = calibrate(maps, truths, base, grid, kinds=kinds)
    assert shared_score < 1.0 and not shared.by_kind  # no one threshold serves both kinds
    assert score == 1.0
    assert best.for_kind("fluorescence").threshold == 0.5 and best.for_kind("histology").threshold == 0.3
    assert best.for_kind("brightfield") == best.for_kind(None) == dataclasses.replace(best, by_kind=())


def test_a_kind_too_small_or_no_better_on_its_own_keeps_the_shared_settings():
    grid = {"threshold": (0.3, 0.5, 0.7), "min_size": (5,)}
    base = PostprocessConfig(method="cc", min_size=5)
    maps, truths, kinds = two_kinds(10, 7)  # under MIN_KIND_IMAGES histology images
    assert MIN_KIND_IMAGES == 8
    assert not calibrate(maps, truths, base, grid, kinds=kinds)[0].by_kind
    maps, truths, _ = two_kinds(18, 0)  # one look under two names: neither gains on its own
    best, score = calibrate(maps, truths, base, grid, kinds=["fluorescence"] * 10 + ["histology"] * 8)
    assert not best.by_kind and best.threshold == 0.5 and score == 1.0


def test_a_kinds_settings_are_checked_and_survive_the_checkpoints_json():
    from nucjax.config import ExperimentConfig

    config = PostprocessConfig(threshold=0.7, by_kind={"histology": {"threshold": 0.3, "seed_threshold": 0.6}})
    assert config.for_kind("histology") == PostprocessConfig(threshold=0.3, seed_threshold=0.6)
    assert config.for_kind("fluorescence") == PostprocessConfig(threshold=0.7)
    stored = ExperimentConfig(postprocess=config)
    assert ExperimentConfig.from_json(stored.to_json()) == stored
    assert hash(ExperimentConfig.from_json(stored.to_json()).postprocess) == hash(config)
    with pytest.raises(ValueError, match="unknown image kind 'tissue'"):
        PostprocessConfig(by_kind={"tissue": {"threshold": 0.3}})
    with pytest.raises(ValueError, match="not min_size"):
        PostprocessConfig(by_kind={"histology": {"min_size": 3}})
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        PostprocessConfig(by_kind={"histology": {"threshold": 3}})


def test_a_kinds_settings_are_said_in_words_where_the_settings_are_shown():
    from ensemble.report import describe
    from nucjax.bioimage import kind_text

    config = PostprocessConfig(threshold=0.7, by_kind={"histology": {"threshold": 0.2, "seed_threshold": 0.5}})
    assert describe(config).endswith("; histology: seed threshold 0.5, threshold 0.2")
    assert "Histology images use seed threshold 0.5, threshold 0.2 instead." in kind_text(config)
    assert kind_text(PostprocessConfig()) == "" and ";" not in describe(PostprocessConfig())
