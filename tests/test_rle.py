import numpy as np
import pytest

from nucjax.rle import RLEError, rle_decode, rle_encode, rle_pixels, rle_runs


def test_encode_is_column_major_and_one_indexed():
    mask = np.array([[1, 0, 0], [1, 1, 0]])
    # Column-major pixels: (0,0)=1 (1,0)=2 (0,1)=3 (1,1)=4 -> 1,2 and 4.
    assert rle_encode(mask) == "1 2 4 1"


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 40, 2))
    mask = rng.random(shape) < rng.uniform(0.05, 0.95)
    assert np.array_equal(rle_decode(rle_encode(mask), shape), mask)


@pytest.mark.parametrize(
    "mask",
    [
        np.ones((7, 5), bool),  # the full image: one run
        np.pad(np.ones((1, 1), bool), ((3, 3), (2, 2))),  # a one-pixel object
        np.eye(6, dtype=bool),  # one-pixel runs in every column
        np.zeros((4, 4), bool),
    ],
)
def test_round_trip_edge_cases(mask):
    encoded = rle_encode(mask)
    assert np.array_equal(rle_decode(encoded, mask.shape), mask)


def test_edge_pixels():
    mask = np.zeros((5, 6), bool)
    mask[0, 0] = mask[-1, -1] = mask[-1, 0] = mask[0, -1] = True
    assert rle_encode(mask) == "1 1 5 1 26 1 30 1"
    assert np.array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


def test_full_image_is_one_run():
    assert rle_encode(np.ones((3, 4))) == "1 12"


def test_pixels_match_decode():
    mask = np.random.default_rng(1).random((9, 11)) < 0.3
    ys, xs = rle_pixels(rle_encode(mask), mask.shape)
    assert set(zip(ys.tolist(), xs.tolist())) == set(zip(*np.nonzero(mask)))


@pytest.mark.parametrize(
    "encoded, message",
    [
        ("1 2 3", "odd number"),
        ("0 2", "below 1"),
        ("5 2 3 1", "not sorted"),
        ("1 5 3 1", "overlaps"),
        ("1 0", "not positive"),
        ("1 x", "not an integer"),
    ],
)
def test_bad_rle_is_refused(encoded, message):
    with pytest.raises(RLEError, match=message):
        rle_runs(encoded)


def test_run_past_the_image_is_refused():
    with pytest.raises(RLEError, match="past the image"):
        rle_decode("10 4", (3, 4))


def test_label_images_encode_as_their_objects_do_one_by_one():
    from nucjax.rle import rle_encode_labels

    assert rle_encode_labels(np.array([[1, 2], [1, 2]])) == ["1 2", "3 2"]
    assert rle_encode_labels(np.zeros((3, 4), np.int32)) == []
    rng = np.random.default_rng(0)
    for _ in range(200):
        labels = rng.integers(0, int(rng.integers(1, 8)), tuple(rng.integers(1, 30, 2))).astype(np.int32)
        ids = [i for i in np.unique(labels) if i]
        assert rle_encode_labels(labels) == [rle_encode(labels == i) for i in ids]
