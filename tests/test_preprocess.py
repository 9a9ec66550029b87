import cv2
import numpy as np
import pytest

from nucjax.preprocess import (
    adaptive_threshold,
    colour_boost,
    from_square,
    is_colour,
    preprocess,
    stretch,
    to_grey,
    to_square,
)


def grey_rgb(grey):
    return np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=2)


def test_grey_matches_the_reports_bgr_conversion():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1].copy()  # what cv2.imread gave the report
    assert np.array_equal(to_grey(rgb), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_dark_grey_image_is_stretched_not_inverted():
    image = grey_rgb([[10, 20], [30, 60]])
    assert preprocess(image).tolist() == [[0, 51], [102, 255]]


def test_bright_grey_image_is_inverted():
    image = grey_rgb([[200, 250], [250, 250]])  # mean 237.5 > 150
    # 255 - x: [[55, 5], [5, 5]] -> stretched: 55 -> 255, 5 -> 0
    assert preprocess(image).tolist() == [[255, 0], [0, 0]]


def test_colour_image_is_always_inverted_and_boosted():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = [[10, 40], [70, 100]]  # dark, yet colour: inverted anyway
    grey = 255 - to_grey(image)
    expected = colour_boost(stretch(grey))
    assert is_colour(image)
    assert np.array_equal(preprocess(image), expected)
    # The brightest inverted pixel was the darkest: stays at the top.
    assert preprocess(image)[0, 0] == 255


def test_colour_boost_formula():
    x = np.array([0, 50, 128, 205, 255], np.uint8)
    assert colour_boost(x).tolist() == [0, 0, 128, 255, 255]


def test_constant_image_becomes_zero():
    assert preprocess(grey_rgb(np.full((4, 4), 77))).max() == 0


def test_adaptive_threshold_is_binary_and_gaussian_11_2():
    pre = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    out = adaptive_threshold(pre)
    expected = cv2.adaptiveThreshold(pre, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 11, 2)
    assert set(np.unique(out)) <= {0, 255}
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("keep_aspect", [False, True])
@pytest.mark.parametrize("shape", [(30, 50), (64, 64), (100, 40)])
def test_labels_survive_the_round_trip_through_an_upscale(shape, keep_aspect):
    labels = np.random.default_rng(2).integers(0, 5, shape).astype(np.int32)
    square, geometry = to_square(labels, 200, keep_aspect=keep_aspect, nearest=True)
    assert square.shape == (200, 200)
    # Every side grows, so the inverse gives back every pixel's label.
    assert np.array_equal(from_square(square, geometry, nearest=True), labels)


def test_keep_aspect_pads_the_corner():
    image = np.full((50, 100, 3), 9, np.uint8)
    square, geometry = to_square(image, 64, keep_aspect=True)
    assert geometry.scaled_hw == (32, 64)
    assert (square[:32] == 9).all() and (square[32:] == 0).all()


def test_distorting_resize_inverts_a_smooth_map():
    yy, xx = np.mgrid[0:60, 0:90].astype(np.float32)
    prob = (yy + xx) / 150
    square, geometry = to_square(prob, 128)
    assert np.abs(from_square(square, geometry) - prob).max() < 0.02


def test_inverse_refuses_a_square_of_the_wrong_size():
    _, geometry = to_square(np.zeros((10, 10)), 32)
    with pytest.raises(ValueError, match="32x32"):
        from_square(np.zeros((16, 16)), geometry)


def stained_tissue(seed: int = 0):
    """A synthetic H&E-like image: pink (eosin) tissue on white, purple
    (haematoxylin) nuclei; returns (RGB uint8, nucleus mask)."""
    from nucjax.data.synthetic import HISTOLOGY, render

    rng = np.random.default_rng(seed)
    labels = np.zeros((96, 96), np.int32)
    yy, xx = np.mgrid[0:96, 0:96]
    for label, (cy, cx) in enumerate([(20, 20), (30, 70), (70, 30), (72, 72), (50, 48)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = label
    return render(rng, labels, HISTOLOGY), labels > 0


def test_stain_input_makes_stained_nuclei_bright_on_a_dark_background():
    from nucjax.preprocess import nucleus_channel

    image, nuclei = stained_tissue()
    stain = nucleus_channel(image, "stain", "percentile").astype(np.float32)
    ring = cv2.dilate(nuclei.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~nuclei
    assert stain[nuclei].mean() > 2.5 * stain[~nuclei].mean()  # nuclei bright, the rest dark
    assert stain[nuclei].mean() > 2 * stain[ring].mean()  # the tissue right beside them too


@pytest.mark.parametrize("kind", ["fluorescence", "brightfield"])
def test_grey_images_pass_through_stain_input_unchanged(kind, tiny_samples):
    from nucjax.data import image_kind
    from nucjax.preprocess import nucleus_channel, preprocess

    sample = next(s for s in tiny_samples if image_kind(s.image) == kind)
    np.testing.assert_array_equal(nucleus_channel(sample.image, "stain", "minmax"), preprocess(sample.image))


def test_percentile_stretch_ignores_one_bright_speck():
    from nucjax.preprocess import nucleus_channel

    grey = np.full((64, 64), 10, np.uint8)
    grey[20:30, 20:30] = 60  # a dim nucleus
    grey[0, 0] = 255  # one hot pixel
    image = np.repeat(grey[..., None], 3, axis=2)
    assert nucleus_channel(image, "reference", "minmax")[25, 25] < 60
    assert nucleus_channel(image, "reference", "percentile")[25, 25] == 255
