"""DSB2018 data: readers of Kaggle's layout and RLE CSVs, image kinds and
the stratified split, and the synthetic DSB-like generator."""

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
from nucjax.data.split import KINDS, Split, image_kind, split_samples, stratified_split
from nucjax.data.synthetic import SyntheticConfig, generate

__all__ = [
    "DataError",
    "Dataset",
    "KINDS",
    "Sample",
    "Skipped",
    "Split",
    "SyntheticConfig",
    "find_samples",
    "generate",
    "image_kind",
    "load_dataset",
    "read_image",
    "read_rle_csv",
    "split_samples",
    "stratified_split",
    "write_kaggle_sample",
]
