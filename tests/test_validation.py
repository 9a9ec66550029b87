"""Validation is prediction: the score training records for a checkpoint is
the score nucjax.predict --split val gives for it, image for image."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nucjax import predict
from nucjax.data import SyntheticConfig, generate, write_kaggle_sample
from nucjax.data.kaggle import find_samples
from nucjax.segmenter import Segmenter, folder_images, segment_folder
from nucjax.train.__main__ import main as train_main
from nucjax.checkpoints import list_checkpoints

#: Images large enough for the nucleus-scale pyramid (two levels), nuclei
#: larger than the canonical diameter the run trains at, so prediction shrinks them.
SCALED = SyntheticConfig(n_images=12, seed=3, sizes=((96, 96), (112, 128)), size_weights=(0.5, 0.5))


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaled")
    for sample in generate(SCALED):
        write_kaggle_sample(sample, root)
    run = tmp_path_factory.mktemp("run") / "run"
    # Every epoch is kept, so each one can be checked. The inputs' smoothing is the default's 1 px for
    # 16-px nuclei, scaled to these 10-px ones; no grain in a 100-step run.
    train_main(["--data", str(root), "--out", str(run), "--size", "32", "--depth", "2", "--base-filters", "8",
                "--epochs", "4", "--steps-per-epoch", "25", "--batch-size", "4", "--lr", "0.01",
                "--diameter", "10", "--smooth", "0.6", "--noise", "0", "--val-fraction", "0.3", "--split", "stratified",
                "--max-to-keep", "4"])
    return root, run


def test_every_checkpoint_scores_in_prediction_what_training_validated(scaled_run, tmp_path, capsys):
    root, run = scaled_run
    checkpoints = list_checkpoints(run)
    assert [c.epoch for c in checkpoints] == [1, 2, 3, 4]
    assert any(c.score > 0 for c in checkpoints)  # the check means something only where nuclei are found
    for info in checkpoints:
        sources, _ = predict.split_part(find_samples(root)[0], "val", info.config.train)
        segmenter = Segmenter.load(info.path).planned(folder_images(sources))  # as nucjax.predict plans its folder
        scores = [next(iter(r.scores.values())) for r in segment_folder(segmenter.segment, sources)]
        assert len(scores) == info.metrics["images"]
        assert float(np.mean(scores)) == info.score, info.path.name
        predict.main(["--checkpoint", str(info.path), "--data", str(root), "--split", "val",
                      "--out", str(tmp_path / f"{info.path.name}.csv")])
        *_, by_group, printed = capsys.readouterr().out.strip().splitlines()
        assert printed == f"Kaggle score: {info.score:.4f}"
        # Scored by the same groups, under the names training gave them.
        printed_groups = {entry.split()[0]: entry.split()[1] for entry in by_group.removeprefix("by group: ").split(", ")}
        assert printed_groups == {group: f"{score:.4f}" for group, score in info.metrics["scores_by_group"].items()}


def test_the_scale_decision_holds_under_a_small_change_of_the_weights(scaled_run):
    import jax
    from flax import nnx

    from nucjax.data import load_dataset
    from nucjax.inference import Predictor
    from nucjax.scale import median_diameter, scale_to, snapped
    from nucjax.segmenter import Model
    from nucjax.checkpoints import load_model

    root, run = scaled_run
    info = list_checkpoints(run)[-1]
    network, _ = load_model(info.path)
    segmenter = Segmenter.load(info.path)
    model = segmenter.models[0]
    # The next step's worth of change: every weight moved by 0.1% of itself, at random.
    params = nnx.state(network, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(params))))
    nnx.update(network, jax.tree.map(lambda p: p * (1 + 1e-3 * jax.random.normal(next(keys), p.shape)), params))
    moved = segmenter.replace(models=(Model("moved", None, model.config, model.score, Predictor(network).bind(network)),))
    samples = load_dataset(root).samples
    decided = [segmenter.member_maps(s.image)[0] for s in samples]
    # The same decision: native for both, or shrunk for both by factors within 3% (the estimate's wobble,
    # far inside the training's 25% scale jitter).
    for before, after in zip(decided, [moved.member_maps(s.image)[0] for s in samples]):
        assert (before == 1.0) == (after == 1.0) and abs(np.log(before / after)) < 0.03, (before, after)
    # Some images are shrunk (the check is not all native), and each one shrunk has nuclei that need it: a
    # model this small misses some and sizes them roughly (test_scale checks the estimate), but invents none.
    truth = [snapped(scale_to(median_diameter(s.labels), model.diameter)) for s in samples]
    shrunk = [t for d, t in zip(decided, truth) if d != 1.0]
    assert shrunk and all(t != 1.0 for t in shrunk), list(zip(decided, truth))


def test_the_ensembles_calibrated_score_is_what_its_plans_predict(scaled_run, tmp_path):
    from ensemble.images import calibration_samples
    from ensemble.selection import EnsembleConfig, ensemble_plans
    from nucjax.segmenter import load_model

    root, run = scaled_run
    models = [load_model(c.path) for c in list_checkpoints(run)[-2:]]
    calibration, _ = calibration_samples(models, None, root, tmp_path)
    _, plans, _ = ensemble_plans(models, calibration, EnsembleConfig(select="all", compare=True), {"scale": "model"})
    sources, _ = predict.split_part(find_samples(root)[0], "val", models[0].config.train)
    from nucjax.combine import COMBINATIONS

    assert [p.segmenter.combine for p in plans] == ["mean", *(m for m in COMBINATIONS if m != "mean")]  # nuclei too
    for plan in plans:
        segmenter = plan.segmenter.planned(folder_images(sources))
        scores = [next(iter(r.scores.values())) for r in segment_folder(segmenter.segment, sources)]
        assert float(np.mean(scores)) == plan.score, plan.name
