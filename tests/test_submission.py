import numpy as np
import pytest

from nucjax.submission import (
    SubmissionError,
    decode_submission,
    object_masks,
    read_submission,
    submission_rows,
    write_submission,
)


def labels_a():
    labels = np.zeros((6, 5), np.int32)
    labels[0:2, 0:2] = 1
    labels[3:6, 2:5] = 4  # ids need not be consecutive
    return labels


def test_write_then_decode_round_trip(tmp_path):
    empty = np.zeros((4, 4), np.int32)
    rows = write_submission(tmp_path / "s.csv", [("a", labels_a()), ("b", empty)])
    assert rows == 3
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "ImageId,EncodedPixels"
    assert lines[-1] == "b,"  # an image with no object keeps one empty row
    decoded = decode_submission(tmp_path / "s.csv", {"a": (6, 5), "b": (4, 4)})
    assert np.array_equal(decoded["a"] > 0, labels_a() > 0)
    assert decoded["a"].max() == 2
    assert decoded["b"].max() == 0


def test_overlapping_masks_are_refused_and_nothing_is_written(tmp_path):
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    with pytest.raises(ValueError, match="image a: objects overlap"):
        write_submission(tmp_path / "s.csv", [("a", masks)])
    assert not (tmp_path / "s.csv").exists()


def test_a_stack_of_disjoint_masks_is_accepted():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0] = True
    masks[2, 3] = True  # masks[1] is empty and dropped
    assert len(object_masks(masks)) == 2
    assert len(submission_rows("x", masks)) == 2


def test_an_image_predicted_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        write_submission(tmp_path / "s.csv", [("a", labels_a()), ("a", labels_a())])


def write(tmp_path, text):
    path = tmp_path / "s.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("Id,Pixels\na,1 2\n", "row 1: header"),
        ("ImageId,EncodedPixels\na,1 2 3\n", "row 2 \\(a\\): odd number"),
        ("ImageId,EncodedPixels\na,1 2\na,5 3 1 1\n", "row 3 \\(a\\): runs are not sorted"),
        ("ImageId,EncodedPixels\na,1 2\n,3 1\n", "row 3: expected ImageId"),
    ],
)
def test_malformed_rows_are_named(tmp_path, text, message):
    with pytest.raises(SubmissionError, match=message):
        read_submission(write(tmp_path, text))


@pytest.mark.parametrize(
    "text, message",
    [
        ("ImageId,EncodedPixels\na,1 2\nzz,1 1\n", "row 3: unknown ImageId zz"),
        ("ImageId,EncodedPixels\nzz,1 1\n", "no row for image a"),
        ("ImageId,EncodedPixels\na,29 3\n", "row 2 \\(a\\): run ends at pixel 31"),
        ("ImageId,EncodedPixels\na,1 4\na,3 2\n", "row 3 \\(a\\): object overlaps the one in row 2"),
        ("ImageId,EncodedPixels\na,1 4\na,\n", "row 3 \\(a\\): an empty row beside objects"),
    ],
)
def test_decoding_checks_ids_ranges_and_overlap(tmp_path, text, message):
    with pytest.raises(SubmissionError, match=message):
        decode_submission(write(tmp_path, text), {"a": (6, 5)})


def test_huge_rle_fields_are_read(tmp_path):
    stripes = np.zeros((200, 2000), np.int32)
    stripes[::2] = 1  # 200,000 one-pixel runs: a field far past csv's default limit
    write_submission(tmp_path / "s.csv", [("a", stripes)])
    assert np.array_equal(decode_submission(tmp_path / "s.csv", {"a": stripes.shape})["a"], stripes)
