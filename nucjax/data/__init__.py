"""DSB2018 data: readers of Kaggle's layout and RLE CSVs, truth for
scoring, image kinds, acquisition groups and the two fixed splits, and
the synthetic DSB-like generator and its cache."""

from nucjax.data.kaggle import (
    DataError,
    Dataset,
    Sample,
    Skipped,
    find_samples,
    load_dataset,
    read_image,
    read_rle_csv,
    write_kaggle_sample,
)
from nucjax.data.split import (
    KINDS,
    SPLITS,
    Split,
    acquisition_groups,
    group_split,
    image_kind,
    run_groups,
    split_samples,
    stratified_split,
)
from nucjax.data.synthetic import SEARCH_SMOKE, SyntheticConfig, generate
from nucjax.data.cache import synthetic_root
from nucjax.data.truth import read_truth

__all__ = [
    "DataError",
    "Dataset",
    "KINDS",
    "SEARCH_SMOKE",
    "SPLITS",
    "Sample",
    "Skipped",
    "Split",
    "SyntheticConfig",
    "acquisition_groups",
    "find_samples",
    "group_split",
    "generate",
    "image_kind",
    "load_dataset",
    "run_groups",
    "read_image",
    "read_rle_csv",
    "read_truth",
    "split_samples",
    "stratified_split",
    "synthetic_root",
    "write_kaggle_sample",
]
