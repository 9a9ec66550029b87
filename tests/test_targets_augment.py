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
