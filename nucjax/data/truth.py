"""Truth for scoring: label images by ImageId from a Kaggle solution CSV
(stage1_solution.csv) or a labelled folder in Kaggle's layout."""

from __future__ import annotations

from pathlib import Path

from nucjax.data.kaggle import DataError, Skipped, load_dataset, read_rle_csv


def read_truth(path: Path) -> tuple[dict, list[Skipped]]:
    """({ImageId: (H, W) int32 labels}, files skipped). A folder sample that
    cannot be read with its labels is a DataError: a score needs them all."""
    path = Path(path)
    if path.is_dir():
        dataset = load_dataset(path, labelled=True)
        lost = [entry for entry in dataset.skipped if entry.lost_sample]
        if lost:
            raise DataError(f"{lost[0]}; a score needs every truth image")
        return {s.image_id: s.labels for s in dataset.samples}, list(dataset.skipped)
    return read_rle_csv(path), []
