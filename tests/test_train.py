import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_experiment
from nucjax.inference import Predictor, predict_image
from nucjax.batches import batch_key, pack
from nucjax.inputs import model_inputs, training_examples
from nucjax.postprocess import CALIBRATION_GRID
from nucjax.train import loop
from nucjax.checkpoints import (
    CheckpointError,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    read_checkpoint,
    resolve_checkpoint,
    restore_into,
)


def split(samples):
    return samples[:6], samples[6:]


def interrupt_after(epoch: int):
    """An on_epoch that stops a run as an interruption would, after `epoch` is saved."""
    def on_epoch(result, maps):
        if result.epoch == epoch:
            raise KeyboardInterrupt
    return on_epoch


def test_trials_that_differ_only_in_numbers_share_one_compiled_step(tiny_samples):
    """Compile once: the learning rate, its schedule and length, the weight decay, the loss, the border
    weight, the elastic probability and the scale jitter are values the step reads, so two such trials
    lower to the same program (one entry in the compilation cache); an augmentation turned off changes it."""
    def program(**sections):
        config = tiny_experiment(**sections)
        model = loop.build_training_model(config)
        optimizer = loop.make_optimizer(model, config.train)
        step = loop.make_train_step(config)
        data = jax.device_put(pack(training_examples(tiny_samples[:2], "standard", config.inputs, config.augment)))
        return step.func.lower(*step.args, model, optimizer, data, jnp.arange(2, dtype=jnp.int32), batch_key(0, 1, 0)).as_text()

    first = program(train={"learning_rate": 1e-3, "schedule": "cosine", "loss": "bce_dice", "channel_weights": (1.0, 0.5)},
                    augment={"elastic": 0.3}, inputs={"scale_jitter": 0.15})
    other = program(train={"learning_rate": 3e-3, "schedule": "step", "loss": "bce", "channel_weights": (1.0, 2.0),
                           "weight_decay": 1e-4, "warmup_steps": 2, "epochs": 5},
                    augment={"elastic": 0.6}, inputs={"scale_jitter": 0.25})
    assert first == other
    assert program(augment={"elastic": 0.0}, inputs={"scale_jitter": 0.15}) != first


def test_the_learning_rate_follows_optax_schedules():
    """The traced schedules are optax's warm-up cosine (to 1%) and its steps of /10 at 1/2 and 3/4."""
    import optax

    count = jnp.arange(0, 130)
    cosine = optax.warmup_cosine_decay_schedule(0.0, 2e-3, 10, 120, 2e-5)
    stepped = optax.piecewise_constant_schedule(2e-3, {60: 0.1, 90: 0.1})
    np.testing.assert_allclose(loop.scheduled_learning_rate(count, 2e-3, 0, 10, 120), cosine(count), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(loop.scheduled_learning_rate(count, 2e-3, 1, 10, 120), stepped(count), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(loop.scheduled_learning_rate(count, 2e-3, 2, 10, 120), np.float32(2e-3))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_steps_drawing_their_own_batches_lower_the_loss(tiny_samples, precision):
    config = tiny_experiment(train={"learning_rate": 1e-2, "warmup_steps": 0, "epochs": 1, "steps_per_epoch": 120,
                                    "batch_size": 4, "precision": precision})
    model = loop.build_training_model(config)
    optimizer = loop.make_optimizer(model, config.train)
    step = loop.make_train_step(config)
    data = jax.device_put(pack(training_examples(tiny_samples, "standard", config.inputs, config.augment)))
    indices = jnp.arange(4, dtype=jnp.int32)
    losses = np.array([float(step(model, optimizer, data, (indices + i) % 8, batch_key(0, 1, i))) for i in range(120)])
    assert np.isfinite(losses).all()
    assert losses[-20:].mean() < 0.7 * losses[:20].mean()  # augmented batches differ each step: compare averages
    assert int(optimizer.step[...]) == 120
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)  # mixed precision keeps float32 parameters


def test_training_resumes_where_it_stopped(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 3, "steps_per_epoch": 2})
    train, val = split(tiny_samples)

    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, train, val, tmp_path, on_epoch=interrupt_after(1))
    assert [c.epoch for c in list_checkpoints(tmp_path)] == [1]
    results = loop.train_and_evaluate(config, train, val, tmp_path)
    assert [r.epoch for r in results] == [2, 3]
    assert [r.step for r in results] == [4, 6]  # the step count goes on
    latest = read_checkpoint(tmp_path / "checkpoints" / "epoch_0003")
    assert latest.step == 6 and latest.config.train.epochs == 3


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 1})
    train, val = split(tiny_samples)
    loop.train_and_evaluate(config, train, val, tmp_path)
    info = best_checkpoint(tmp_path)
    saved = json.loads((info.path / "checkpoint.json").read_text())
    assert {"score", "loss", "scores_by_kind", "foreground"} <= set(saved["metrics"])
    assert saved["config"]["postprocess"]["threshold"] in CALIBRATION_GRID["border"]["threshold"]

    model, loaded = load_model(tmp_path)  # a run folder resolves to its best checkpoint
    again, _ = load_model(info.path)
    inputs = model_inputs(val[0].image, "standard")
    first = predict_image(Predictor(model).bind(model), inputs, loaded.config.inputs, loaded.config.model.multiple)
    second = predict_image(Predictor(again).bind(again), inputs, loaded.config.inputs, loaded.config.model.multiple)
    assert first.shape == val[0].image.shape[:2] + (2,)
    assert np.array_equal(first, second)


def test_best_and_latest_checkpoints_are_kept(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 4, "steps_per_epoch": 1, "max_to_keep": 1})
    train, val = split(tiny_samples)
    results = loop.train_and_evaluate(config, train, val, tmp_path)
    kept = [c.epoch for c in list_checkpoints(tmp_path)]
    best = max(results, key=lambda r: (r.score, r.epoch)).epoch
    assert kept == sorted({best, 4})


def test_nan_loss_is_detected(tmp_path, tiny_samples, monkeypatch):
    monkeypatch.setattr(loop, "segmentation_loss", lambda logits, y, w, dice: jnp.nan * logits.sum())
    with pytest.raises(loop.TrainingDiverged, match="loss became nan at step 1"):
        loop.train_and_evaluate(tiny_experiment(), *split(tiny_samples), tmp_path)


def test_exploding_loss_is_detected(tmp_path, tiny_samples, monkeypatch):
    calls = iter(range(1000))
    real_step = loop.make_train_step

    def exploding(config):
        step = real_step(config)
        return lambda *args: float(step(*args)) * (1 if next(calls) < 3 else 1000)

    monkeypatch.setattr(loop, "make_train_step", exploding)
    config = tiny_experiment(train={"steps_per_epoch": 5, "warmup_steps": 1})
    with pytest.raises(loop.TrainingDiverged, match="loss exploded"):
        loop.train_and_evaluate(config, *split(tiny_samples), tmp_path)


def test_all_foreground_output_is_detected(tmp_path, tiny_samples, monkeypatch):
    from nucjax.segmenter import LabelledMaps

    monkeypatch.setattr(loop, "labelled_maps", lambda segmenter, samples: [
        LabelledMaps(s.image, s.labels, 1.0, [np.ones(s.image.shape[:2] + (2,), np.float32)]) for s in samples])
    with pytest.raises(loop.TrainingDiverged, match="all-foreground"):
        loop.train_and_evaluate(tiny_experiment(), *split(tiny_samples), tmp_path)


def test_time_budget_ends_training_cleanly(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 50, "steps_per_epoch": 50})
    results = loop.train_and_evaluate(config, *split(tiny_samples), tmp_path, time_budget_s=1.0)
    assert len(results) == 1 and results[0].stopped_early
    assert best_checkpoint(tmp_path).epoch == 1


def test_epochs_fit_the_budget():
    config = tiny_experiment(train={"steps_per_epoch": 100, "batch_size": 8}, inputs={"size": 128})
    # 100 steps of 1 s and validation of 8 x 128^2 x 30 px at a third of a step: 110 s an epoch.
    assert loop.epochs_for_budget(config, 1.0, 8 * 128 * 128 * 30, 1100) == 10
    # 100 validation images add 10 s of calibration an epoch: 120 s, 9 epochs.
    assert loop.epochs_for_budget(config, 1.0, 8 * 128 * 128 * 30, 1100, val_images=100) == 9


def test_a_run_plans_its_epochs_again_from_its_own_pace():
    # Epoch 3 trained, its validation still to run: 1150 s left, 3% in hand, minus that
    # validation (20 s): 1095.5 s, at 100 + 20 s an epoch 9 more and 15.5 s over, too
    # little to train and validate any part of one.
    assert loop.epochs_at_pace(3, 100.0, 20.0, 1150.0) == 12
    # 1200 s left: 9 more and 64 s over, 44 s of training after its validation: a 13th,
    # shorter epoch (the deadline ends it) rather than 44 s idle.
    assert loop.epochs_at_pace(3, 100.0, 20.0, 1200.0) == 13
    # No whole epoch fits but 66 s of training does: one more, cut short.
    assert loop.epochs_at_pace(3, 100.0, 20.0, 110.0) == 4
    # Not a quarter of an epoch's steps: the plan ends with this one, never before it.
    assert loop.epochs_at_pace(3, 100.0, 20.0, 60.0) == 3
    assert loop.epochs_at_pace(3, 100.0, 20.0, 5.0) == 3


@pytest.mark.parametrize("first_plan, replanned, replanned_at, epochs", [
    (3, 5, [3, 4, 5], [3, 3, 5, 5, 5]),  # from REPLAN_EPOCH on
    (2, 4, [2, 3, 4], [2, 4, 4, 4]),  # a first plan ending before REPLAN_EPOCH: from its last epoch
])
def test_a_run_fitted_to_its_budget_replans_from_the_third_epoch_or_its_last_on(tmp_path, tiny_samples, monkeypatch,
                                                                                first_plan, replanned, replanned_at, epochs):
    """The first plan (timed steps, no validation yet) is replaced at REPLAN_EPOCH,
    or at its own last epoch when that comes first (trials timed while sharing the
    cores), and after every epoch since, by the plan at the run's measured pace:
    the run trains that many epochs and its checkpoints carry the new plan (what
    a resume continues)."""
    paces = []
    monkeypatch.setattr(loop, "epochs_for_budget", lambda *args, **kwargs: first_plan)
    monkeypatch.setattr(loop, "epochs_at_pace", lambda *args: paces.append(args) or replanned)
    config = tiny_experiment(train={"epochs": 50})
    results = loop.train_and_evaluate(config, *split(tiny_samples), tmp_path, time_budget_s=600.0,
                                      fit_epochs_to_budget=True)
    assert loop.REPLAN_EPOCH == 3 and [pace[0] for pace in paces] == replanned_at
    for epoch, train_seconds, val_seconds, seconds_left in paces:
        assert train_seconds > 0 and val_seconds > 0 and 0 < seconds_left < 600
    assert [r.epoch for r in results] == list(range(1, replanned + 1)) and [r.epochs for r in results] == epochs
    assert read_checkpoint(tmp_path / "checkpoints" / f"epoch_{replanned:04d}").config.train.epochs == replanned


def test_a_run_can_validate_only_its_first_and_last_epochs(tmp_path, tiny_samples):
    """validate_between=False (a fold trial fitted to its budget): the first epoch, which
    times a validation, and the last are validated, saved and reported; those between
    only train."""
    config = tiny_experiment(train={"epochs": 4})
    results = loop.train_and_evaluate(config, *split(tiny_samples), tmp_path / "plain", validate_between=False)
    assert [(r.epoch, r.step) for r in results] == [(1, 3), (4, 12)]
    assert [c.epoch for c in list_checkpoints(tmp_path / "plain")] == [1, 4]


def test_a_run_validating_first_and_last_validates_the_last_of_its_new_plan(tmp_path, tiny_samples, monkeypatch):
    # First planned 2 epochs, re-planned to 4 at the second: the second now only trains.
    monkeypatch.setattr(loop, "epochs_for_budget", lambda *args, **kwargs: 2)
    monkeypatch.setattr(loop, "epochs_at_pace", lambda *args: 4)
    results = loop.train_and_evaluate(tiny_experiment(train={"epochs": 50}), *split(tiny_samples), tmp_path,
                                      time_budget_s=600.0, fit_epochs_to_budget=True, validate_between=False)
    assert [(r.epoch, r.epochs) for r in results] == [(1, 2), (4, 4)]


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a training run"):
        resolve_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(CheckpointError, match="format 99"):
        read_checkpoint(tmp_path)


def test_a_checkpoint_of_another_shape_is_refused(tmp_path, tiny_samples):
    loop.train_and_evaluate(tiny_experiment(train={"epochs": 1}), *split(tiny_samples), tmp_path)
    info = best_checkpoint(tmp_path)
    record = json.loads((info.path / "checkpoint.json").read_text())
    record["config"]["model"]["base_filters"] = 8
    (info.path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not fit its config"):
        load_model(info.path)


def averaged_state(path, folder="model"):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path / folder)


def test_the_moving_average_is_validated_saved_predicted_and_kept_across_a_resume(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 2, "steps_per_epoch": 4, "learning_rate": 1e-2, "ema_decay": 0.9})
    train, val = split(tiny_samples)
    whole = loop.train_and_evaluate(config, train, val, tmp_path / "whole")

    def interrupt(result, maps):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, train, val, tmp_path / "resumed", on_epoch=interrupt)
    resumed = loop.train_and_evaluate(config, train, val, tmp_path / "resumed")
    assert [r.epoch for r in resumed] == [2]

    last = tmp_path / "whole" / "checkpoints" / "epoch_0002"
    average, weights = averaged_state(last), averaged_state(last, "training")
    # The average is not the last weights, and a resumed run ends with the same average and weights.
    assert not all(np.array_equal(a, w) for a, w in zip(jax.tree.leaves(average), jax.tree.leaves(weights)))
    again = tmp_path / "resumed" / "checkpoints" / "epoch_0002"
    for name in ("model", "training"):
        for a, b in zip(jax.tree.leaves(averaged_state(last, name)), jax.tree.leaves(averaged_state(again, name))):
            np.testing.assert_array_equal(a, b)
    assert resumed[-1].score == whole[-1].score
    # Prediction loads the average.
    model, _ = load_model(last)
    loaded = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(average)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_the_average_follows_the_weights_early_and_then_slowly():
    assert float(loop.average_decay(0.999, 0)) == pytest.approx(0.1)
    assert float(loop.average_decay(0.999, 100)) == pytest.approx(101 / 110)
    assert float(loop.average_decay(0.999, 100_000)) == pytest.approx(0.999)


def test_weight_decay_shrinks_the_kernels_only():
    from nucjax.models.unet import build_model

    config = tiny_experiment()
    decayed = config.replace(train={"weight_decay": 0.5, "learning_rate": 0.1, "warmup_steps": 0, "schedule": "constant"})
    model = build_model(config.model)
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))  # a copy: the update writes in place
    optimizer = loop.make_optimizer(model, decayed.train)
    optimizer.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))  # no gradient: only the decay moves weights
    after = nnx.state(model, nnx.Param)
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        if old.ndim > 1:  # kernels: lr * decay = 5% smaller
            np.testing.assert_allclose(new, old * 0.95, rtol=1e-5, atol=1e-7)
        else:  # batch-norm scales and biases: untouched
            np.testing.assert_array_equal(new, old)
    with pytest.raises(ValueError, match="weight_decay"):
        config.replace(train={"weight_decay": -1.0})


def info_with(epoch, scores=None, score=None):
    """A checkpoint's record with per-image scores, or (older nucjax) only a mean."""
    from nucjax.checkpoints import CheckpointInfo

    metrics = {"score": float(np.mean(scores)), "image_scores": list(scores)} if scores is not None else {"score": score}
    return CheckpointInfo(Path(f"epoch_{epoch:04d}"), epoch, epoch * 10, metrics, tiny_experiment())


def test_an_earlier_checkpoint_is_chosen_only_when_it_is_better_beyond_the_noise():
    from nucjax.checkpoints import choose_checkpoint

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 100)
    noisy = base + rng.normal(0, 0.05, 100)  # the same model's luck: about +-0.005 on the mean
    latest = info_with(3, base)
    assert choose_checkpoint([info_with(1, noisy + 0.004), info_with(2, base - 0.01), latest]) is latest
    clearly = info_with(2, base + 0.05)
    assert choose_checkpoint([info_with(1, noisy), clearly, latest]) is clearly
    # Without per-image scores (older checkpoints): the highest mean.
    assert choose_checkpoint([info_with(1, score=0.5), info_with(2, score=0.4)]).epoch == 1


def test_a_paused_run_trains_exactly_as_one_never_paused(tmp_path, tiny_samples):
    """What a halving search's paused trial relies on: the same step count,
    learning-rate schedule and random stream after a resume, so the same
    losses; validate_on scores the epochs it names on those images only."""
    config = tiny_experiment(train={"epochs": 3, "steps_per_epoch": 2})
    train, val = split(tiny_samples)
    subset = lambda epoch: [0] if epoch < 3 else range(len(val))  # noqa: E731

    straight = loop.train_and_evaluate(config, train, val, tmp_path / "straight", validate_on=subset)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, train, val, tmp_path / "paused", on_epoch=interrupt_after(1),
                                validate_on=subset)
    resumed = loop.train_and_evaluate(config, train, val, tmp_path / "paused", validate_on=subset)
    assert [r.loss for r in resumed] == [r.loss for r in straight[1:]]
    assert [r.score for r in resumed] == [r.score for r in straight[1:]]
    assert [r.validated_images for r in straight] == [1, 1, len(val)]


def test_a_run_planned_anew_trains_to_its_new_end_and_resumes_with_it(tmp_path, tiny_samples):
    """A halving survivor's re-plan: planned for 3 epochs, told after its
    first that 4 fit, it trains to epoch 4 on a learning-rate schedule that
    ends at 4 epochs' steps; interrupted, it resumes with the new plan."""
    config = tiny_experiment(train={"epochs": 3, "steps_per_epoch": 2, "max_to_keep": 10})
    train, val = split(tiny_samples)
    timed = []

    def four_after_the_first(epoch, unit_seconds):
        timed.append((epoch, unit_seconds))
        return 4 if epoch == 1 else None

    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, train, val, tmp_path, plan_epochs=four_after_the_first,
                                on_epoch=interrupt_after(2))
    resumed = loop.train_and_evaluate(config, train, val, tmp_path)
    assert [(r.epoch, r.epochs, r.step) for r in resumed] == [(3, 4, 6), (4, 4, 8)]
    assert [epoch for epoch, _ in timed] == [1, 2] and all(seconds > 0 for _, seconds in timed)
    first = json.loads((tmp_path / "checkpoints" / "epoch_0001" / "checkpoint.json").read_text())
    assert first["metrics"]["unit_seconds"] == timed[0][1]

    # The schedule it trained and saved with ends at 4 epochs' steps; a fresh optimizer's at 3.
    saved = latest_checkpoint(tmp_path)
    assert saved.config.train.epochs == 4
    model = loop.build_training_model(saved.config)
    optimizer = loop.make_optimizer(model, config.train)
    fresh = optimizer.opt_state.hyperparams["total_steps"][...]
    restore_into(saved, model, optimizer)
    restored = optimizer.opt_state.hyperparams["total_steps"][...]
    assert (int(fresh), int(restored)) == (6, 8) and restored.dtype == fresh.dtype


def test_an_epoch_given_no_images_is_not_validated_saved_or_reported(tmp_path, tiny_samples):
    """A halving search's survivors validate every few units: the epochs in
    between train as usual (the same losses after them) but leave nothing."""
    config = tiny_experiment(train={"epochs": 4, "steps_per_epoch": 2, "max_to_keep": 10})
    train, val = split(tiny_samples)
    sparse = loop.train_and_evaluate(config, train, val, tmp_path / "sparse",
                                     validate_on=lambda epoch: range(len(val)) if epoch in (2, 4) else ())
    every = loop.train_and_evaluate(config, train, val, tmp_path / "every")
    assert [r.epoch for r in sparse] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "sparse" / "checkpoints").iterdir()) == ["epoch_0002", "epoch_0004"]
    assert [(r.loss, r.score) for r in sparse] == [(r.loss, r.score) for r in every if r.epoch in (2, 4)]


def test_a_budget_stop_validates_as_the_last_epoch_would(tmp_path, tiny_samples):
    config = tiny_experiment(train={"epochs": 50, "steps_per_epoch": 50})
    train, val = split(tiny_samples)
    results = loop.train_and_evaluate(config, train, val, tmp_path, time_budget_s=1.0,
                                      validate_on=lambda epoch: range(len(val)) if epoch == 50 else ())
    assert len(results) == 1 and results[0].stopped_early and results[0].validated_images == len(val)
    assert best_checkpoint(tmp_path).epoch == 1


def test_validation_at_the_true_scale_sizes_each_image_by_its_masks(tmp_path, tiny_samples):
    """What a halving search's pruning rungs score: no first pass, each image
    at the diameter its masks give; prediction's path sizes by the network."""
    from nucjax.config import Validation
    from nucjax.scale import median_diameter, scale_to, snapped

    train, val = split(tiny_samples)
    # Trained at half the nuclei's size, so the masks' scale is not the native one.
    half = float(np.median([median_diameter(s.labels) for s in val])) / 2
    config = tiny_experiment(train={"epochs": 1, "steps_per_epoch": 1}, inputs={"diameter": half})
    positions = tuple(range(len(val)))
    proxy = loop.train_and_evaluate(config, train, val, tmp_path / "proxy", validate_on=lambda e: Validation(positions, True))
    scales = read_checkpoint(tmp_path / "proxy" / "checkpoints" / "epoch_0001").metrics["image_scales"]
    truth = [snapped(scale_to(median_diameter(s.labels), config.inputs.diameter)) for s in val]
    assert scales == truth and any(scale < 1 for scale in truth) and proxy[0].validated_images == len(val)
    predicted = loop.train_and_evaluate(config, train, val, tmp_path / "predicted")
    # An untrained network's own estimate is not the masks' (a check that could not fail otherwise).
    assert read_checkpoint(tmp_path / "predicted" / "checkpoints" / "epoch_0001").metrics["image_scales"] != truth
