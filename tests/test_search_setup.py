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

    from search.refit import fold_params, target_fold_params, trial_share

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
    # --refit of a halving trial (its epoch the 37-step rung unit): the space's 150-step epochs, and
    # without a budget the 740 steps it trained, in whole epochs; with one, its epochs fitted later.
    halving_trial = {"model": "standard", "steps_per_epoch": 37, "epochs": 20}
    unbudgeted = target_fold_params(halving_trial, args, 5, 150, budgeted=False)
    assert (unbudgeted["steps_per_epoch"], unbudgeted["epochs"]) == (150, 5)
    budgeted = target_fold_params(halving_trial, args, 5, 150, budgeted=True)
    assert (budgeted["steps_per_epoch"], budgeted["epochs"]) == (150, 20)


def test_a_refit_keeps_time_for_its_ensembles_calibration_by_its_images():
    """search.refit.ensemble_reserve: the calibration's work follows the out-of-fold images and
    their pixels (about 300 s for 607 on two cores), so a 30-minute refit keeps about as much
    for it as the share of a 60-minute one; a small set keeps the minute at least."""
    from search.refit import ENSEMBLE_MIN_S, ensemble_reserve

    assert ensemble_reserve(30 * 60, 607) == pytest.approx(0.55 * 607) and ensemble_reserve(30 * 60, 607) > 0.1 * 30 * 60
    assert ensemble_reserve(120 * 60, 607) == pytest.approx(0.1 * 120 * 60)
    assert ensemble_reserve(5 * 60, 40) == ENSEMBLE_MIN_S
    # Models of 20 px nuclei shrink images less: (20 / 16) ** 2 the pixels to predict.
    assert ensemble_reserve(30 * 60, 607, diameter=20.0) == pytest.approx(0.55 * 607 * 1.5625)


@pytest.mark.parametrize("gpu", [False, True])
def test_the_spaces_vary_size_width_depth_model_and_diameter_and_nothing_else(gpu):
    """Many draws of the extended space take every value of each axis; what
    the space leaves out is nucjax.train's default in every draw."""
    from nucjax.config import default_params, from_params
    from search.spaces import DEPTHS, DIAMETERS, SIZES, WIDTHS, search_space
    from search.tuner import sampled_params

    space = search_space("extended", gpu=gpu)
    draws = [sampled_params(space, seed) for seed in range(200)]
    expected = {"size": set(SIZES[gpu]), "base_filters": set(WIDTHS[gpu]), "depth": set(DEPTHS),
                "diameter": set(DIAMETERS), "model": {"standard", "extended"}}
    for axis, values in expected.items():
        assert {draw[axis] for draw in draws} == values, axis
    assert {draw["model"] for draw in (sampled_params(search_space("standard", gpu=gpu), s) for s in range(20))} == {"standard"}
    defaults = from_params(default_params())
    for draw in draws[:20]:
        config = from_params({key: value for key, value in draw.items() if key != "batch_size"})
        assert config.train.learning_rate == defaults.train.learning_rate
        assert (config.train.schedule, config.train.loss) == (defaults.train.schedule, defaults.train.loss)
        assert config.augment == defaults.augment and config.inputs.scale_jitter == defaults.inputs.scale_jitter
        assert config.train.channel_weights == defaults.train.channel_weights


def test_the_first_configuration_of_a_search_is_nucjax_trains_defaults():
    from nucjax.config import default_params
    from search.spaces import contender, search_space

    defaults = default_params()
    for gpu in (False, True):
        first = contender(search_space("extended", gpu=gpu))
        assert first == {key: defaults[key] for key in ("model", "size", "base_filters", "depth", "diameter")}
    # The smoke space's tiny U-Nets have no room for the default width: its first value stands in.
    smoke = contender(search_space("extended", smoke=True))
    assert smoke["base_filters"] == 4 and smoke["model"] == "standard" and smoke["mode"] == "crop"


def test_every_configuration_trains_the_same_work_between_milestones():
    """HalvingTrial.unit_steps: a configuration four times the work per step (256 px crops
    of the default U-Net) trains a quarter of the steps of the one the plan was timed on;
    its warm-up shrinks alike; a wider one less than its
    multiply-adds say; without a recorded unit of work, the plan's steps."""
    from nucjax.config import default_params
    from search.halving import HalvingTrial
    from search.trainable import equal_time_units, experiment_config, step_cost

    plan_steps = 40
    reference = experiment_config({**default_params(), "steps_per_epoch": plan_steps, "warmup_steps": 20})
    halving = HalvingTrial((0,), 1, unit_cost=plan_steps * step_cost(reference))
    assert equal_time_units(reference, halving) == reference
    large = experiment_config({**default_params(), "size": 256, "steps_per_epoch": plan_steps, "warmup_steps": 20})
    scaled = equal_time_units(large, halving)
    assert (scaled.train.steps_per_epoch, scaled.train.warmup_steps) == (10, 5)
    wide = experiment_config({**default_params(), "base_filters": 32, "model": "extended", "steps_per_epoch": plan_steps})
    assert equal_time_units(wide, halving).train.steps_per_epoch < 10  # 8 times the multiply-adds, about 5 the time
    # Twice the width is four times the multiply-adds but, measured, about 2.6 times the time.
    wider = experiment_config({**default_params(), "base_filters": 32, "steps_per_epoch": plan_steps})
    assert 10 < equal_time_units(wider, halving).train.steps_per_epoch < 20
    assert equal_time_units(large, HalvingTrial((0,), 1)) == large


def test_the_first_rungs_rank_correlation_with_the_last_cut():
    from search.halving import first_rung_correlation, rank_correlation

    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 2], [1, 2, 3]) == pytest.approx(0.866, abs=1e-3)  # a tie takes the mean rank
    assert rank_correlation([1, 2], [1, 2]) is None and rank_correlation([1, 1, 1], [1, 2, 3]) is None
    plan = {"rungs": [[6, 1], [3, 3], [1, 9]]}
    record = {"plan": plan, "scores": {
        "0": {t: [s, 0.0] for t, s in zip("abcdef", (0.30, 0.31, 0.32, 0.33, 0.34, 0.35))},
        "1": {"d": [0.5, 0.0], "e": [0.4, 0.0], "f": [0.45, 0.0]}}}
    correlation, configurations = first_rung_correlation(record)
    assert configurations == 3 and correlation == pytest.approx(-0.5)  # d e f ranked 1 2 3 first, 3 1 2 at the cut
    assert first_rung_correlation({"plan": {"rungs": [[4, 1], [2, 3]]}, "scores": {"0": {}}}) == (None, 0)


def test_a_search_starts_from_the_contender_and_never_trains_a_configuration_twice_in_its_first_rung():
    from search.spaces import contender, first_configurations, search_space

    space = search_space("extended", smoke=True)  # 16 distinct configurations
    points = first_configurations(space, 12, seed=3)
    assert points[0] == contender(space) and len(points) == 12
    assert len({tuple(sorted(p.items())) for p in points}) == 12
    assert first_configurations(space, 12, seed=3) == points and first_configurations(space, 12, seed=4) != points


def test_a_search_draws_only_configurations_its_units_can_train():
    """At the 60-minute CPU search's unit (37 steps of the contender), a 256-px
    multi-arm U-Net of 32 filters would train 1-2 steps per unit: it is not
    drawn; every draw trains at least MIN_UNIT_STEPS, the draws are distinct
    and as many as the space holds; a long unit allows the whole space, and
    a unit shorter than MIN_UNIT_STEPS still allows the contender."""
    from search.halving import HalvingTrial
    from search.spaces import contender, distinct_points, first_configurations, search_space
    from search.trainable import MIN_UNIT_STEPS, affordable, experiment_config, step_cost

    space = search_space("extended")
    affordable_37 = affordable(space, 37)
    assert not affordable_37({"model": "extended", "size": 256, "base_filters": 32, "depth": 5, "diameter": 16.0})
    count = distinct_points(space, affordable_37)
    assert 2 < count < distinct_points(space) == 72
    points = first_configurations(space, count, seed=0, affordable=affordable_37)
    assert points[0] == contender(space) and len({tuple(sorted(p.items())) for p in points}) == count
    halving = HalvingTrial((0,), 1, unit_cost=37 * step_cost(experiment_config(contender(space))))
    for point in points:
        assert halving.unit_steps(step_cost(experiment_config(point)), 37) >= MIN_UNIT_STEPS, point
    # Asked for more than the space holds, the draws repeat in order rather than add an unaffordable one.
    assert first_configurations(space, count + 2, seed=0, affordable=affordable_37)[count:] == points[:2]
    assert distinct_points(space, affordable(space, 100 * MIN_UNIT_STEPS)) == 72
    assert distinct_points(space, affordable(space, MIN_UNIT_STEPS // 2)) >= 1
    assert affordable(space, MIN_UNIT_STEPS // 2)(contender(space))
    assert distinct_points(search_space("simple")) is None  # continuous thresholds: no count
