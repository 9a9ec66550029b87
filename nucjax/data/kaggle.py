"""Reading DSB2018 data: Kaggle's folder layout, plain image folders and RLE CSVs.

Kaggle's layout is ``<root>/<id>/images/<id>.png`` with one 0/255 PNG per
nucleus in ``<root>/<id>/masks/``. A plain folder of PNG/TIF files (no
labels) is read as well, so one reader serves training and prediction.

What happens to bad input (the CLIs repeat this in --help):

- fatal (DataError): the root is missing or holds no image at all; a CSV
  with a bad header or a bad row; with strict=True, anything skipped.
- the sample is skipped, with the reason recorded in Dataset.skipped: no
  ``images/`` folder, no image or several in it, an unreadable or truncated
  image; when labels are asked for, a missing or empty ``masks/`` folder,
  an unreadable mask, a mask whose size differs from its image. A skipped
  sample is never loaded with a partial label image.
- ignored, with a note in Dataset.skipped: a stray non-image file, and a
  mask file with no foreground pixel. Hidden files (.DS_Store) are ignored
  silently.

Pixels claimed by two masks go to the smaller nucleus (ties: the mask file
that sorts first), since a pixel or two matters more to a small object.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nucjax.rle import RLEError, rle_csv_reader, rle_pixels

IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"})


class DataError(Exception):
    """Input that cannot be read; the message names the file and what would fix it."""


@dataclass(frozen=True)
class Sample:
    """One image, RGB (H, W, 3) uint8, and its instance labels (H, W) int32 or None."""

    image_id: str
    image: np.ndarray
    labels: np.ndarray | None = None

    @property
    def full_mask(self) -> np.ndarray:
        """The reference report's merged mask: every nucleus as one foreground."""
        if self.labels is None:
            raise ValueError(f"image {self.image_id} has no labels")
        return self.labels > 0


@dataclass(frozen=True)
class Skipped:
    """A file or sample left out of a dataset, and why."""

    path: str
    reason: str

    @property
    def lost_sample(self) -> bool:
        """True when a whole sample (or its labels) was left out, not just a stray file."""
        return not self.reason.endswith(": ignored")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class SampleSource:
    """Where one sample lives on disk; masks_dir is None for a plain image."""

    image_id: str
    image_path: Path
    masks_dir: Path | None


@dataclass(frozen=True)
class Dataset:
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def image_ids(self) -> tuple[str, ...]:
        return tuple(s.image_id for s in self.samples)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/TIF/JPEG (grey, RGB or RGBA; 8 or 16 bit) as (H, W, 3) uint8 RGB.

    16-bit values are divided by 257, which maps 0..65535 onto 0..255.
    Raises DataError for an unreadable or truncated file.
    """
    array = _decode(Path(path))
    if array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {array.dtype}; expected 8 or 16-bit")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def _decode(path: Path) -> np.ndarray:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror})") from None
    array = _quiet_imdecode(raw) if raw.size else None
    if array is None:
        raise DataError(f"{path}: not a readable image (truncated or corrupt?)")
    return array


@contextmanager
def _opencv_errors_only():
    """OpenCV's own log lines off (errors kept) inside: the DataError raised
    for a bad file names it once. Threads reading a set share one outer
    use, so each restores the level it found."""
    from cv2.utils import logging as cv_logging

    level = cv_logging.getLogLevel()
    cv_logging.setLogLevel(cv_logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv_logging.setLogLevel(level)


def _quiet_imdecode(raw: np.ndarray):
    """cv2.imdecode without OpenCV's own log line on a bad file."""
    with _opencv_errors_only():
        return cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)


def read_mask(path: str | Path) -> np.ndarray:
    """Read one nucleus mask as (H, W) bool: any nonzero pixel is the nucleus."""
    array = _decode(Path(path))
    return (array != 0) if array.ndim == 2 else (array != 0).any(axis=2)


def paint_labels(objects: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance labels from per-object flat pixel indices; object i gets label i + 1.

    Overlaps go to the smaller object (ties: the earlier one). An object
    that loses every pixel leaves no gap: labels are compacted.
    """
    labels = np.zeros(shape[0] * shape[1], dtype=np.int32)
    areas = np.array([len(o) for o in objects])
    # Paint large first, so smaller objects overwrite shared pixels.
    for i in sorted(range(len(objects)), key=lambda i: (-areas[i], -i)):
        labels[objects[i]] = i + 1
    present = np.unique(labels)
    present = present[present > 0]
    if len(present) < len(objects):
        lookup = np.zeros(len(objects) + 1, dtype=np.int32)
        lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
        labels = lookup[labels]
    return labels.reshape(shape)


def read_kaggle_labels(masks_dir: Path, shape: tuple[int, int]) -> tuple[np.ndarray, list[Skipped]]:
    """Labels from a ``masks/`` folder for an image of the given (H, W).

    Returns (labels, notes on ignored files). Raises DataError when the
    folder is missing or empty, a mask is unreadable or of another size.
    """
    if not masks_dir.is_dir():
        raise DataError(f"{masks_dir}: no masks/ folder (needed for labels)")
    notes: list[Skipped] = []
    objects: list[np.ndarray] = []
    for path in sorted(masks_dir.iterdir()):
        if _is_hidden(path):
            continue
        if not _is_image_file(path):
            notes.append(Skipped(str(path), "not an image file: ignored"))
            continue
        mask = read_mask(path)
        if mask.shape != shape:
            raise DataError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is {shape[0]}x{shape[1]}")
        pixels = np.flatnonzero(mask)
        if pixels.size == 0:
            notes.append(Skipped(str(path), "mask has no foreground pixel: ignored"))
            continue
        objects.append(pixels)
    if not objects:
        raise DataError(f"{masks_dir}: no mask in the masks/ folder")
    return paint_labels(objects, shape), notes


def find_samples(root: str | Path) -> tuple[list[SampleSource], list[Skipped]]:
    """List the samples under root: Kaggle sample folders and plain image files.

    Returns (sources sorted by id, skipped entries). Raises DataError when
    root is missing or holds nothing to read.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass a Kaggle stage1 folder or a folder of PNG/TIF images")
    sources: list[SampleSource] = []
    skipped: list[Skipped] = []
    for entry in sorted(root.iterdir()):
        if _is_hidden(entry):
            continue
        if _is_image_file(entry):
            sources.append(SampleSource(entry.stem, entry, None))
        elif entry.is_dir():
            source = _kaggle_source(entry, skipped)
            if source is not None:
                sources.append(source)
        else:
            skipped.append(Skipped(str(entry), "not an image file or sample folder: ignored"))
    ids = [s.image_id for s in sources]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{root}: image id '{duplicates[0]}' appears twice (a folder and a file?)")
    if not sources:
        reasons = "; ".join(str(s) for s in skipped[:3])
        raise DataError(f"{root}: no image found (expected <id>/images/<id>.png or image files){': ' + reasons if reasons else ''}")
    return sources, skipped


def _kaggle_source(folder: Path, skipped: list[Skipped]) -> SampleSource | None:
    images_dir = folder / "images"
    if not images_dir.is_dir():
        skipped.append(Skipped(str(folder), "no images/ folder: sample skipped"))
        return None
    candidates = [p for p in sorted(images_dir.iterdir()) if _is_image_file(p) and not _is_hidden(p)]
    skipped.extend(
        Skipped(str(p), "not an image file: ignored")
        for p in sorted(images_dir.iterdir())
        if not _is_hidden(p) and not _is_image_file(p)
    )
    preferred = [p for p in candidates if p.stem == folder.name]
    if len(preferred) == 1:
        return SampleSource(folder.name, preferred[0], folder / "masks")
    if len(candidates) == 1:
        return SampleSource(folder.name, candidates[0], folder / "masks")
    reason = "images/ holds no image" if not candidates else f"images/ holds {len(candidates)} images, none named {folder.name}.png"
    skipped.append(Skipped(str(images_dir), f"{reason}: sample skipped"))
    return None


def load_sample(source: SampleSource, labelled: bool | None) -> tuple[Sample, list[Skipped]]:
    """Read one sample; raises DataError when it must be skipped.

    labelled=None reads labels where the sample has a masks/ folder and
    keeps the image without labels (with a note) when they cannot be read.
    """
    image = read_image(source.image_path)
    has_masks = source.masks_dir is not None and source.masks_dir.is_dir()
    if labelled is False or (labelled is None and not has_masks):
        return Sample(source.image_id, image), []
    if source.masks_dir is None:
        raise DataError(f"{source.image_path}: a plain image has no masks/ folder; labels need Kaggle's layout")
    try:
        labels, notes = read_kaggle_labels(source.masks_dir, image.shape[:2])
    except DataError as err:
        if labelled:
            raise
        return Sample(source.image_id, image), [Skipped(str(source.masks_dir), f"{err}: image kept without labels")]
    return Sample(source.image_id, image, labels), notes


#: Threads that read a set's files.
READ_THREADS = min(8, os.cpu_count() or 1)


def load_dataset(root: str | Path, labelled: bool | None = True, strict: bool = False, ids=None) -> Dataset:
    """Load every readable sample under root (optionally only those in ids).

    labelled: True needs labels (a sample without them is skipped), False
    reads images only, None reads labels where present. Bad samples are
    skipped and reported in Dataset.skipped (see the module docstring);
    strict=True turns the first skip into a DataError.
    """
    sources, skipped = find_samples(root)
    if ids is not None:
        wanted = set(ids)
        sources = [s for s in sources if s.image_id in wanted]
    def load(source):
        try:
            return load_sample(source, labelled)
        except DataError as err:
            return err

    # Decoding PNGs releases the GIL: a thread per core reads a set of many small mask files that much faster.
    with _opencv_errors_only(), ThreadPoolExecutor(READ_THREADS) as pool:
        loaded = list(pool.map(load, sources))
    samples = []
    for source, outcome in zip(sources, loaded):
        if isinstance(outcome, DataError):
            where = source.image_path.parent.parent if source.masks_dir else source.image_path
            skipped.append(Skipped(str(where), f"{outcome}: sample skipped"))
        else:
            samples.append(outcome[0])
            skipped.extend(outcome[1])
    if strict and skipped:
        raise DataError(f"{skipped[0]} (strict mode: fix or remove it)")
    if not samples:
        first = f": {skipped[0]}" if skipped else ""
        raise DataError(f"{root}: no sample could be loaded{first}")
    return Dataset(tuple(samples), tuple(skipped))


def read_rle_csv(path: str | Path, shapes: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Read a Kaggle RLE CSV (``stage1_train_labels.csv``, ``stage1_solution.csv``)
    into label images, keyed by ImageId.

    Columns ImageId and EncodedPixels are needed; Height and Width are used
    when present, otherwise ``shapes`` must give each image's (H, W). Rows
    of one image become objects 1, 2, ... in file order; an empty
    EncodedPixels is an image with no object. Overlaps follow the loader's
    rule. Raises DataError naming the row of any bad value.
    """
    path = Path(path)
    objects: dict[str, list[np.ndarray]] = {}
    image_shapes: dict[str, tuple[int, int]] = {}
    with _open_csv(path) as rows:
        header = next(rows, None)
        columns = _columns(path, header, required=("ImageId", "EncodedPixels"))
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}, row {line}"
            if len(row) < len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
            image_id = row[columns["ImageId"]].strip()
            shape = _row_shape(row, columns, shapes, image_id, where)
            if image_shapes.setdefault(image_id, shape) != shape:
                raise DataError(f"{where}: {image_id} is {shape}, an earlier row said {image_shapes[image_id]}")
            encoded = row[columns["EncodedPixels"]]
            try:
                ys, xs = rle_pixels(encoded, shape)
            except RLEError as err:
                raise DataError(f"{where}: {err}") from None
            pixels = np.sort(ys * shape[1] + xs)
            objects.setdefault(image_id, [])
            if pixels.size:
                objects[image_id].append(pixels)
    return {i: paint_labels(objs, image_shapes[i]) for i, objs in objects.items()}


@contextmanager
def _open_csv(path: Path):
    """Yield a csv reader over path; a missing file is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            yield rle_csv_reader(handle)
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: not a UTF-8 text CSV ({err})") from None


def _columns(path: Path, header, required) -> dict[str, int]:
    if header is None:
        raise DataError(f"{path}: empty file; expected a header {','.join(required)}")
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}, row 1: header {','.join(header)} lacks {', '.join(missing)}")
    return columns


def _row_shape(row, columns, shapes, image_id, where) -> tuple[int, int]:
    if "Height" in columns and "Width" in columns:
        try:
            shape = (int(row[columns["Height"]]), int(row[columns["Width"]]))
        except ValueError:
            raise DataError(f"{where}: Height/Width are not integers") from None
        if min(shape) < 1:
            raise DataError(f"{where}: Height/Width must be positive, got {shape}")
        return shape
    if shapes is None or image_id not in shapes:
        raise DataError(f"{where}: no Height/Width columns and no image size known for {image_id}; pass the image folder")
    return tuple(shapes[image_id])


def write_kaggle_sample(sample: Sample, root: str | Path) -> Path:
    """Write a labelled sample in Kaggle's layout under root; returns its folder.

    The image is an RGBA PNG as Kaggle ships it; each nucleus a 0/255 PNG.
    """
    if sample.labels is None:
        raise ValueError(f"sample {sample.image_id} has no labels to write")
    folder = Path(root) / sample.image_id
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rgba = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGRA)
    _write_png(folder / "images" / f"{sample.image_id}.png", rgba)
    for label in range(1, int(sample.labels.max()) + 1):
        mask = np.where(sample.labels == label, 255, 0).astype(np.uint8)
        _write_png(folder / "masks" / f"{sample.image_id[:16]}-{label:04d}.png", mask)
    return folder


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """An instance label image as a 16-bit PNG (0 background, 1..n nuclei), making its folder."""
    path = Path(path)
    if labels.max() > np.iinfo(np.uint16).max:
        raise DataError(f"{path}: more nuclei than a 16-bit PNG holds")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(path, labels.astype(np.uint16))


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"{path}: could not encode PNG")
    encoded.tofile(path)
