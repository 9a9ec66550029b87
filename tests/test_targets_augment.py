import numpy as np
import pytest

from nucjax.augment import inverse_symmetry, symmetry
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
