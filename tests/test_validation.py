"""Validation is prediction: the score training records for a checkpoint is
the score nucjax.predict --split val gives for it, image for image."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nucjax import predict
from nucjax.data import SyntheticConfig, generate, write_kaggle_sample
from nucjax.data.kaggle import find_samples
from nucjax.segmenter import Segmenter, segment_folder
from nucjax.train.__main__ import main as train_main
from nucjax.train.checkpoints import list_checkpoints

#: Images large enough for the nucleus-scale pyramid (two levels), nuclei
#: larger than the canonical diameter the run trains at, so prediction shrinks them.
SCALED = SyntheticConfig(n_images=12, seed=3, sizes=((96, 96), (112, 128)), size_weights=(0.5, 0.5))


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaled")
    for sample in generate(SCALED):
        write_kaggle_sample(sample, root)
    run = tmp_path_factory.mktemp("run") / "run"
    # Every epoch is kept, so each one can be checked.
    train_main(["--data", str(root), "--out", str(run), "--size", "32", "--depth", "2", "--base-filters", "8",
                "--epochs", "4", "--steps-per-epoch", "25", "--batch-size", "4", "--lr", "0.01", "--warmup-steps", "5",
                "--diameter", "10", "--val-fraction", "0.3", "--split", "stratified", "--max-to-keep", "4"])
    return root, run


def test_every_checkpoint_scores_in_prediction_what_training_validated(scaled_run, tmp_path, capsys):
    root, run = scaled_run
    checkpoints = list_checkpoints(run)
    assert [c.epoch for c in checkpoints] == [1, 2, 3, 4]
    assert any(c.score > 0 for c in checkpoints)  # the check means something only where nuclei are found
    for info in checkpoints:
        segmenter = Segmenter.load(info.path)
        sources = predict.split_part(find_samples(root)[0], "val", info.config.train)
        scores = [next(iter(r.scores.values())) for r in segment_folder(segmenter.segment, sources)]
        assert len(scores) == info.metrics["images"]
        assert float(np.mean(scores)) == info.score, info.path.name
        predict.main(["--checkpoint", str(info.path), "--data", str(root), "--split", "val",
                      "--out", str(tmp_path / f"{info.path.name}.csv")])
        printed = capsys.readouterr().out.strip().splitlines()[-1]
        assert printed == f"Kaggle score: {info.score:.4f}"
