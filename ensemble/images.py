"""Which images an ensemble calibrates on and which it predicts: the
experiment's validation and held-back test splits, or folders the user
names. Calibration follows the split the members were validated on."""

from __future__ import annotations

from pathlib import Path

from nucjax.data import Skipped, find_samples, load_dataset, split_samples, synthetic_root
from nucjax.data.kaggle import Sample, SampleSource
from nucjax.experiment import Experiment, ExperimentError


def experiment_data(experiment: Experiment, cache: Path) -> Path:
    """The folder the experiment searched on; its synthetic set is made again under cache if it has gone."""
    if experiment.data.is_dir():
        return experiment.data
    if experiment.synthetic is not None:
        return synthetic_root(experiment.synthetic, cache)
    raise ExperimentError(f"{experiment.folder}: its data folder {experiment.data} is gone; pass --data (and --calibration)")


def calibration_samples(members, experiment: Experiment | None, folder: Path | None, cache: Path,
                        strict: bool = False) -> tuple[list[Sample], list[Skipped]]:
    """Labelled validation samples and what was skipped loading them: the
    validation split of folder (as the first member's training split it)
    when given, else the experiment's validation split; none without either
    or when folder has no labels. strict: a skipped file is a DataError."""
    if folder is not None:
        dataset = load_dataset(folder, labelled=None, strict=strict)
        samples = [s for s in dataset.samples if s.labels is not None]
        if not samples:
            return [], list(dataset.skipped)
        train = members[0].config.train
        return train.split_samples(samples)[1], list(dataset.skipped)
    if experiment is None:
        return [], []
    root = experiment_data(experiment, cache)
    if experiment.val_ids is not None:
        dataset = load_dataset(root, labelled=True, ids=experiment.val_ids, strict=strict)
        return list(dataset.samples), list(dataset.skipped)
    # An experiment from before validation ids were recorded: split again as search did.
    dataset = load_dataset(root, labelled=True, strict=strict)
    val = split_samples(dataset.samples, experiment.val_fraction, experiment.test_fraction, experiment.seed,
                        method=experiment.split)[1]
    return val, list(dataset.skipped)


def prediction_sources(data: Path | None, experiment: Experiment | None, cache: Path) -> tuple[list[SampleSource], list[Skipped]]:
    """The images to predict: every image of data, else the test images the experiment's search held back."""
    if data is not None:
        return find_samples(data)
    if not experiment.test_ids:
        raise ExperimentError(f"{experiment.folder}: the search held back no test images (--test-fraction 0); pass --data")
    sources, skipped = find_samples(experiment_data(experiment, cache))
    wanted = set(experiment.test_ids)
    return [s for s in sources if s.image_id in wanted], skipped
