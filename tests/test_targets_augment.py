import numpy as np
import pytest

from nucjax.augment import AugmentConfig, augment, inverse_symmetry, symmetry
from nucjax.targets import body_target, border_target, targets


def two_touching_squares():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10] = 1
    labels[5:15, 10:18] = 2
    return labels


def test_body_is_the_report_mask():
    labels = two_touching_squares()
    assert np.array_equal(body_target(labels), (labels > 0).astype(np.float32))


def test_border_marks_where_nuclei_meet_and_nowhere_else():
    border = border_target(two_touching_squares(), window=3)
    # Both sides of the contact, and the background pixel at each end of it.
    assert border[4:16, 9:11].all()
    assert border.sum() == 12 * 2
    lone = np.zeros((20, 20), np.int32)
    lone[5:15, 5:15] = 1
    assert border_target(lone).sum() == 0


def test_border_covers_a_narrow_gap():
    labels = np.zeros((10, 20), np.int32)
    labels[:, :9] = 1
    labels[:, 11:] = 2  # a 2-pixel gap
    border = border_target(labels, window=5)
    assert border[:, 9:11].all()


def test_targets_stack_channels():
    assert targets(two_touching_squares(), border=True).shape == (20, 20, 2)
    assert targets(two_touching_squares(), border=False).shape == (20, 20, 1)


@pytest.mark.parametrize("k", range(8))
def test_symmetries_are_inverted_exactly(k):
    array = np.arange(24).reshape(4, 6)
    assert np.array_equal(inverse_symmetry(symmetry(array, k), k), array)


def test_the_eight_symmetries_are_distinct():
    array = np.arange(9).reshape(3, 3)
    assert len({symmetry(array, k).tobytes() for k in range(8)}) == 8


@pytest.mark.parametrize("seed", range(4))
def test_geometry_moves_input_and_labels_together(seed):
    labels = two_touching_squares()
    inputs = (labels[..., None] > 0).astype(np.float32).repeat(2, axis=2)
    config = AugmentConfig(elastic=1.0, brightness=0, contrast=0)
    x, y = augment(np.random.default_rng(seed), inputs, labels, config)
    assert x.shape == inputs.shape and y.dtype == labels.dtype
    agreement = ((x[..., 0] > 0.5) == (y > 0)).mean()
    assert agreement > 0.97  # linear vs nearest interpolation differ only on edges
    assert set(np.unique(y)) <= {0, 1, 2}


def test_augmentation_is_deterministic_from_the_seed():
    labels = two_touching_squares()
    inputs = np.random.default_rng(0).random((20, 20, 1)).astype(np.float32)
    a = augment(np.random.default_rng(5), inputs, labels, AugmentConfig(elastic=1.0))
    b = augment(np.random.default_rng(5), inputs, labels, AugmentConfig(elastic=1.0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_elastic_leaves_no_black_border():
    inputs = np.ones((32, 32, 1), np.float32)
    x, _ = augment(np.random.default_rng(1), inputs, np.zeros((32, 32), np.int32),
                   AugmentConfig(flips=False, elastic=1.0, elastic_alpha=12, brightness=0, contrast=0))
    assert x.min() > 0.99  # reflected, never padded with zeros


def test_recolouring_changes_colour_but_not_shape_and_is_seeded():
    from nucjax.augment import recolour
    from nucjax.preprocess import is_colour

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grey = np.repeat(rng.integers(0, 256, (24, 32, 1), dtype=np.uint8), 3, axis=2)
    for image in (colour, grey):
        copies = [recolour(np.random.default_rng(seed), image) for seed in range(12)]
        assert all(c.shape == image.shape and c.dtype == np.uint8 for c in copies)
        assert all(not np.array_equal(c, image) for c in copies)
        np.testing.assert_array_equal(recolour(np.random.default_rng(3), image), copies[3])
    inverted_or_tinted = [recolour(np.random.default_rng(seed), grey) for seed in range(12)]
    assert any(np.array_equal(c, 255 - grey) for c in inverted_or_tinted) and any(is_colour(c) for c in inverted_or_tinted)


def test_a_tinted_fluorescence_image_carries_its_nuclei_as_stain():
    from nucjax.augment import recolour
    from nucjax.preprocess import haematoxylin, is_colour

    grey = np.full((32, 32), 15, np.uint8)
    grey[8:20, 8:20] = 200  # a bright nucleus on black
    image = np.repeat(grey[..., None], 3, axis=2)
    tinted = next(c for c in (recolour(np.random.default_rng(seed), image) for seed in range(20)) if is_colour(c))
    density = haematoxylin(tinted)
    assert density[8:20, 8:20].mean() > density[24:, 24:].mean()  # the nucleus holds the stain, as in a slide


def whole_object_diameters(body: np.ndarray) -> list[float]:
    """Equivalent diameters of the body's components that do not touch the crop's edge."""
    import cv2

    n, pieces, stats, _ = cv2.connectedComponentsWithStats(body.astype(np.uint8), connectivity=8)
    h, w = body.shape
    inside = [i for i in range(1, n) if stats[i, 0] > 0 and stats[i, 1] > 0
              and stats[i, 0] + stats[i, 2] < w and stats[i, 1] + stats[i, 3] < h]
    return [2 * np.sqrt(stats[i, cv2.CC_STAT_AREA] / np.pi) for i in inside]


def lattice(diameter: int, side: int = 400) -> np.ndarray:
    labels = np.zeros((side, side), np.int32)
    yy, xx = np.mgrid[0:side, 0:side]
    step = int(diameter * 1.7)
    for label, (cy, cx) in enumerate(((y, x) for y in range(step // 2, side, step) for x in range(step // 2, side, step)), start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = label
    return labels


def test_crops_shrink_large_nuclei_to_the_canonical_diameter_and_keep_small_ones():
    from nucjax.inputs import InputConfig, training_example

    rng = np.random.default_rng(0)
    for diameter, expected in ((48, 16), (10, 10)):  # 48 px nuclei are shrunk to 16; 10 px ones are never enlarged
        labels = lattice(diameter)
        inputs = (labels > 0).astype(np.uint8)[..., None] * 200
        seen = []
        for _ in range(8):
            x, y = training_example(rng, inputs, labels, InputConfig(size=64, diameter=16.0, scale_jitter=0.0), None,
                                    diameter=float(diameter))
            assert x.shape == (64, 64, 1) and y.shape == (64, 64, 2)
            seen += whole_object_diameters(y[..., 0] > 0)
        assert seen and abs(np.median(seen) - expected) <= 0.1 * expected
