"""Kaggle submissions: writing label images as RLE rows, and reading them back
with every check Kaggle's scorer made implicitly.

A submission is a CSV with the header ``ImageId,EncodedPixels`` and one row
per object; an image with no object has one row with empty EncodedPixels.
Overlapping objects in one image are refused (Kaggle scored such a file 0).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from nucjax.rle import RLEError, rle_csv_reader, rle_encode, rle_encode_labels, rle_pixels, rle_runs

HEADER = ("ImageId", "EncodedPixels")


class SubmissionError(ValueError):
    """A malformed submission; the message names the file and row."""


def object_masks(prediction: np.ndarray) -> list[np.ndarray]:
    """The objects of a prediction as (H, W) bool masks.

    A prediction is an (H, W) label image (0 = background) or an (N, H, W)
    stack of binary masks, which must not overlap.
    """
    prediction = np.asarray(prediction)
    if prediction.ndim == 2:
        ids = np.unique(prediction)
        return [prediction == i for i in ids[ids != 0]]
    if prediction.ndim == 3:
        masks = prediction != 0
        if (masks.sum(axis=0) > 1).any():
            raise ValueError("objects overlap; Kaggle scores a submission with overlapping objects 0")
        return [m for m in masks if m.any()]
    raise ValueError(f"a prediction must be (H, W) labels or (N, H, W) masks, got shape {prediction.shape}")


def submission_rows(image_id: str, prediction: np.ndarray) -> list[tuple[str, str]]:
    """(ImageId, EncodedPixels) rows for one image: one per object, or one empty row."""
    if np.asarray(prediction).ndim == 2:
        return [(image_id, encoded) for encoded in rle_encode_labels(np.asarray(prediction))] or [(image_id, "")]
    try:
        masks = object_masks(prediction)
    except ValueError as err:
        raise ValueError(f"image {image_id}: {err}") from None
    return [(image_id, rle_encode(m)) for m in masks] or [(image_id, "")]


def write_submission(path: str | Path, predictions: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write (image_id, prediction) pairs as a Kaggle submission; returns the row count.

    Each image id may appear once. Nothing is written if any prediction is
    refused.
    """
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for image_id, prediction in predictions:
        if image_id in seen:
            raise ValueError(f"image {image_id} is predicted twice")
        seen.add(image_id)
        rows.extend(submission_rows(image_id, prediction))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return len(rows)


def read_submission(path: str | Path) -> dict[str, list[tuple[int, str]]]:
    """Read a submission's rows grouped by image: {id: [(row number, encoded), ...]}.

    Checks the header and each row's RLE syntax (pairs of integers, sorted,
    not overlapping); sizes are checked by decode_submission.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    try:
        return _read_rows(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise SubmissionError(f"{path}: not a UTF-8 text CSV ({err})") from None


def _read_rows(path: Path) -> dict[str, list[tuple[int, str]]]:
    entries: dict[str, list[tuple[int, str]]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = rle_csv_reader(handle)
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header[:2]) != HEADER:
            raise SubmissionError(f"{path}, row 1: header must be {','.join(HEADER)}, got {','.join(header or [])!r}")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) < 2 or not row[0].strip():
                raise SubmissionError(f"{path}, row {line}: expected ImageId,EncodedPixels, got {','.join(row)!r}")
            image_id, encoded = row[0].strip(), row[1]
            try:
                rle_runs(encoded)
            except RLEError as err:
                raise SubmissionError(f"{path}, row {line} ({image_id}): {err}") from None
            entries.setdefault(image_id, []).append((line, encoded))
    return entries


def decode_submission(path: str | Path, shapes: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Read a submission into int32 label images for exactly the images in shapes.

    Raises SubmissionError naming the row for: an unknown ImageId, a run out
    of the image, objects that overlap, an empty row beside objects; and
    naming the images the submission misses.
    """
    path = Path(path)
    entries = read_submission(path)
    missing = sorted(set(shapes) - set(entries))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise SubmissionError(f"{path}: no row for image {missing[0]}{more}; every image needs a row")
    labels: dict[str, np.ndarray] = {}
    for image_id, rows in entries.items():
        if image_id not in shapes:
            raise SubmissionError(f"{path}, row {rows[0][0]}: unknown ImageId {image_id}")
        labels[image_id] = _decode_image(path, image_id, rows, shapes[image_id])
    return labels


def _decode_image(path: Path, image_id: str, rows, shape) -> np.ndarray:
    image = np.zeros(shape, dtype=np.int32)
    objects = [(line, encoded) for line, encoded in rows if encoded.strip()]
    if objects and len(objects) < len(rows):
        line = next(line for line, encoded in rows if not encoded.strip())
        raise SubmissionError(f"{path}, row {line} ({image_id}): an empty row beside objects of the same image")
    for label, (line, encoded) in enumerate(objects, start=1):
        try:
            pixels = rle_pixels(encoded, shape)
        except RLEError as err:
            raise SubmissionError(f"{path}, row {line} ({image_id}): {err}") from None
        clash = image[pixels]
        if clash.any():
            first = objects[int(clash[clash > 0][0]) - 1][0]
            raise SubmissionError(f"{path}, row {line} ({image_id}): object overlaps the one in row {first}")
        image[pixels] = label
    return image
