"""What the search checks and decides before any trial runs: bad input
refused before Ray starts, the cluster config, trial params, the trial
environment. No Ray cluster: these run beside the cluster tests of
test_search.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--space", "resnet"], "unknown search space 'resnet'"),
        (["--data", "/nonexistent/folder"], "no such folder"),
        (["--storage", "/proc/nucjax-cannot-write"], "cannot write there"),
        (["--resume"], "no experiment to resume"),
        (["--folds", "1"], "k-fold needs at least 2 folds"),
        (["--refit", "/nonexistent/trial_1"], "--refit /nonexistent/trial_1: no such trial"),
        (["--folds", "3", "--split", "stratified"], "needs --split group"),
        # The synthetic set has 9 acquisition groups outside its test images.
        (["--folds", "40"], "--folds 40: 40 folds but only 9 acquisition groups"),
    ],
)
def test_bad_input_is_refused_before_ray_starts(tmp_path, flags, message):
    command = [sys.executable, "-m", "search.run", *flags]
    if "--storage" not in flags:
        command += ["--storage", str(tmp_path / "exp")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the error (after the synthetic set's one line, if made)
    assert "ray" not in result.stderr.lower() and not (tmp_path / "exp" / "experiment.json").exists()


def test_a_refit_target_gives_its_flat_settings(tmp_path, tiny_run):
    """--refit takes a search trial's folder, a checkpoint or a run (trained as
    long as that checkpoint), or a JSON file; anything else is named."""
    from nucjax.config import ExperimentConfig, from_params
    from nucjax.checkpoints import best_checkpoint
    from search.refit import RefitError, target_params

    trial = tmp_path / "trial_1"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"model": "standard", "base_filters": 8, "learning_rate": 0.001}))
    assert target_params(trial) == {"model": "standard", "base_filters": 8, "learning_rate": 0.001}

    best = best_checkpoint(tiny_run)
    params = target_params(tiny_run)
    assert from_params(params).model == best.config.model
    assert params["epochs"] * params["steps_per_epoch"] >= best.step > (params["epochs"] - 1) * params["steps_per_epoch"]

    whole = tmp_path / "config.json"
    whole.write_text(ExperimentConfig().replace(model={"depth": 5}).to_json())
    assert from_params(target_params(whole)).model.depth == 5
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"learning_rat": 0.1}))
    with pytest.raises(RefitError, match="learning_rat"):
        target_params(typo)
    with pytest.raises(RefitError, match="no such"):
        target_params(tmp_path / "missing")
    with pytest.raises(RefitError, match="not a checkpoint|neither"):
        target_params(tmp_path)


def test_cluster_yaml_passes_rays_validator():
    import copy

    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and config["available_node_types"]["head"]["resources"].get("GPU", 0) == 0
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(broken))


def test_trial_params_become_an_experiment_config():
    from search.trainable import experiment_config

    params = {"model": "extended", "size": 256, "mode": "resize", "base_filters": 8, "depth": 4, "learning_rate": 1e-3,
              "border": False, "border_weight": 2.0, "batch_size": None, "postprocess": "distance"}
    config = experiment_config(params)
    assert config.model.model == "extended" and config.model.out_channels == 1
    assert config.inputs.size == 256 and config.inputs.mode == "resize"
    assert config.train.batch_size == 8  # on a CPU
    assert config.postprocess.method == "distance"
    on_gpu = experiment_config(params, device_bytes=16 * 2**30)
    assert 8 < on_gpu.train.batch_size <= 32  # filled from the memory estimate


def test_gpu_trials_train_in_mixed_precision_and_cpu_trials_get_the_faster_convolutions():
    from nucjax.cli import EIGEN_CONVOLUTIONS, cpu_convolution_flags
    from search.spaces import search_space
    from search.trainable import experiment_config, trial_environment

    assert search_space("standard", gpu=True)["precision"] == "bfloat16"
    assert search_space("extended", gpu=False)["precision"] == "float32"
    gpu_params = {k: v for k, v in search_space("standard", gpu=True).items() if not hasattr(v, "sample")}
    assert experiment_config(gpu_params).train.precision == "bfloat16"
    environment = trial_environment(cpus=2, gpus=0)
    assert cpu_convolution_flags() == EIGEN_CONVOLUTIONS  # jaxlib 0.10 here: the flag applies
    assert EIGEN_CONVOLUTIONS in environment["XLA_FLAGS"] and environment["JAX_PLATFORMS"] == "cpu"
    assert EIGEN_CONVOLUTIONS in trial_environment(cpus=1, gpus=0)["XLA_FLAGS"]  # beside the single-thread flags


def test_every_fold_runs_at_once_on_whole_slots_or_shares_of_them():
    """search.refit.trial_share: five folds on two one-CPU slots share them (a third of a CPU
    each, all five at once); on four GPUs, one each; two folds on two slots, a slot each."""
    from types import SimpleNamespace

    from search.refit import fold_params, trial_share

    def cluster(cpus, gpus=0):
        return SimpleNamespace(cluster_resources=lambda: {"CPU": cpus, "GPU": gpus})

    args = SimpleNamespace(cpus_per_trial=1.0, gpus_per_trial=0.0, max_concurrent=None, val_fraction=0.15,
                           test_fraction=0.1, seed=3)
    assert trial_share(args, cluster(2), 5) == (1 / 3, 0.0)
    assert trial_share(args, cluster(2), 2) == (1.0, 0.0)
    gpu = SimpleNamespace(**{**vars(args), "cpus_per_trial": 4.0, "gpus_per_trial": 1.0})
    assert trial_share(gpu, cluster(16, 4), 4) == (4.0, 1.0) and trial_share(gpu, cluster(16, 4), 5) == (2.0, 0.5)
    params = fold_params({"model": "extended", "steps_per_epoch": 37, "epochs": 40, "split": "stratified"}, args, 5,
                         steps_per_epoch=150, steps=1000)
    assert params["fold"] == {"grid_search": [0, 1, 2, 3, 4]} and params["folds"] == 5 and params["split"] == "group"
    assert (params["steps_per_epoch"], params["epochs"], params["seed"], params["test_fraction"]) == (150, 7, 3, 0.1)
