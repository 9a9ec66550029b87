"""Which images an ensemble calibrates on and which it predicts: the
experiment's validation and held-back test splits, or folders the user names."""

from __future__ import annotations

from pathlib import Path

from ensemble.members import Experiment, MemberError
from nucjax.data import Skipped, find_samples, load_dataset, split_samples
from nucjax.data.kaggle import Sample, SampleSource


def experiment_data(experiment: Experiment) -> Path:
    """The folder the experiment searched on; the synthetic set is made again if it has gone."""
    if experiment.data.is_dir():
        return experiment.data
    if experiment.synthetic:
        from nucjax.cli import synthetic_root
        from search.experiment import SMOKE_DATA

        return synthetic_root(SMOKE_DATA)
    raise MemberError(f"{experiment.folder}: its data folder {experiment.data} is gone; pass --data (and --calibration)")


def calibration_samples(members, experiment: Experiment | None = None, folder: Path | None = None) -> tuple[list[Sample], list[Skipped]]:
    """Labelled validation samples and what was skipped loading them: the
    validation split of folder (as the first member's training split it)
    when given, else the experiment's validation split; none without either
    or when folder has no labels."""
    if folder is not None:
        dataset = load_dataset(folder, labelled=None)
        samples = [s for s in dataset.samples if s.labels is not None]
        if not samples:
            return [], list(dataset.skipped)
        train = members[0].config.train
        return split_samples(samples, train.val_fraction, seed=train.seed)[1], list(dataset.skipped)
    if experiment is None:
        return [], []
    root = experiment_data(experiment)
    if experiment.val_ids is not None:
        dataset = load_dataset(root, labelled=True, ids=experiment.val_ids)
        return list(dataset.samples), list(dataset.skipped)
    # An experiment from before validation ids were recorded: split again as search did.
    dataset = load_dataset(root, labelled=True)
    val = split_samples(dataset.samples, experiment.val_fraction, experiment.test_fraction, experiment.seed)[1]
    return val, list(dataset.skipped)


def prediction_sources(data: Path | None, experiment: Experiment | None) -> tuple[list[SampleSource], list[Skipped]]:
    """The images to predict: every image of data, else the test images the experiment's search held back."""
    if data is not None:
        return find_samples(data)
    if not experiment.test_ids:
        raise MemberError(f"{experiment.folder}: the search held back no test images (--test-fraction 0); pass --data")
    sources, skipped = find_samples(experiment_data(experiment))
    wanted = set(experiment.test_ids)
    return [s for s in sources if s.image_id in wanted], skipped
