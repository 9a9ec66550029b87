"""The training loop: jitted steps, per-epoch validation with the Kaggle
metric, divergence checks, checkpoints every epoch, resume, a time budget.

train_and_evaluate is the one function the command line and the search
trainable call; it reports through callbacks and prints nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nucjax.config import ExperimentConfig, TrainConfig, as_validation
from nucjax.data import image_kind, run_groups
from nucjax.inference import Predictor
from nucjax.metrics import mean_by
from nucjax.batches import (
    augmentation_values,
    batch_key,
    choose_pipeline,
    device_memory_bytes,
    epoch_order,
    group_weights,
    make_batch,
    pack,
    packed_bytes,
    streamed_sets,
)
from nucjax.inputs import cached_training_examples, training_examples
from nucjax.models.unet import build_model
from nucjax.scale import median_diameter, resize_image
from nucjax.segmenter import Model, Segmenter, Sizing, calibrate_segmenter, fingerprint, labelled_maps
from nucjax.checkpoints import (
    CheckpointInfo,
    latest_checkpoint,
    prune_checkpoints,
    restore_into,
    save_checkpoint,
)
from nucjax.train.losses import segmentation_loss

#: Validation predictions with more foreground than this have collapsed.
ALL_FOREGROUND = 0.9


class TrainingDiverged(RuntimeError):
    """Training went wrong in a way more steps will not fix."""


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    epochs: int  # planned in all
    step: int
    loss: float
    score: float  # mean Kaggle score on the validation split
    scores_by_kind: dict
    scores_by_group: dict  # acquisition group (see nucjax.data.split) -> mean score
    foreground: float  # share of validation pixels predicted as nucleus
    images_per_s: float
    seconds: float
    checkpoint: str
    postprocess: dict
    stopped_early: bool = False
    pipeline: str = ""  # where batches came from: 'resident (N MB)' or 'streaming'
    validated_images: int = 0  # how many validation images scored it (a search's early rungs score a subset)
    validation_seconds: float = 0.0  # of `seconds`, validating and calibrating


#: A schedule as the optimizer's state holds it (a number the compiled step reads).
SCHEDULE_INDEX = {"cosine": 0, "step": 1, "constant": 2}


def scheduled_learning_rate(count, learning_rate, schedule, warmup_steps, total_steps) -> jax.Array:
    """The learning rate after `count` updates, every argument traced or not:
    schedule 0 (cosine) warms up linearly from 0 over warmup_steps, then
    decays along a cosine to 1% at total_steps; 1 (step) divides by 10 at
    1/2 and 3/4 of total_steps; 2 is constant."""
    count = jnp.asarray(count)
    warmup = jnp.asarray(warmup_steps, jnp.float32)
    decay_steps = jnp.maximum(jnp.asarray(total_steps, jnp.float32) - warmup, 1.0)
    progress = jnp.clip(count - warmup, 0.0, decay_steps) / decay_steps
    cosine = jnp.where(count < warmup, count / jnp.maximum(warmup, 1.0), 0.01 + 0.99 * 0.5 * (1 + jnp.cos(jnp.pi * progress)))
    stepped = jnp.where(count >= total_steps // 2, 0.1, 1.0) * jnp.where(count >= (3 * total_steps) // 4, 0.1, 1.0)
    return learning_rate * jnp.select([schedule == 0, schedule == 1], [cosine, stepped], 1.0)


def scheduled_adam(learning_rate, schedule, warmup_steps, total_steps, weight_decay, mask) -> optax.GradientTransformation:
    """Adam with decoupled weight decay on the `mask`ed leaves and the
    learning rate of scheduled_learning_rate."""
    rate = lambda count: scheduled_learning_rate(count, learning_rate, schedule, warmup_steps, total_steps)  # noqa: E731
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay, mask), optax.scale_by_learning_rate(rate))


def make_optimizer(model, config: TrainConfig) -> nnx.Optimizer:
    # The learning rate, its schedule and the weight decay are numbers in the
    # optimizer's state (optax.inject_hyperparams), not constants of the
    # compiled step: a search's trials that differ only in them share one
    # compilation. The decay applies to convolution kernels only: batch-norm
    # scales and biases set levels, not the features' size.
    kernels = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    tx = optax.inject_hyperparams(scheduled_adam, static_args="mask")(
        learning_rate=config.learning_rate, schedule=SCHEDULE_INDEX[config.schedule],
        warmup_steps=min(config.warmup_steps, config.total_steps // 2), total_steps=config.total_steps,
        weight_decay=config.weight_decay, mask=kernels)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def plan_schedule(optimizer: nnx.Optimizer, total_steps: int) -> None:
    """Make the optimizer's learning-rate schedule end at total_steps from
    where it is (the count stays). A number in its state, so the compiled
    step is reused (the value keeps its dtype and weak type)."""
    total = optimizer.opt_state.hyperparams["total_steps"]
    total[...] = jax.lax.full_like(total[...], total_steps)


def step_values(config: ExperimentConfig) -> dict[str, jax.Array]:
    """The numbers of config the train step takes as arguments, not as
    constants, so trials that differ only in them share one compiled step:
    the loss's channel weights and Dice weight, and the augmentation's
    (batches.augmentation_values). The learning rate is in the optimizer."""
    return {"loss_weights": jnp.asarray(config.train.channel_weights, jnp.float32),
            "dice": jnp.float32(config.train.loss == "bce_dice"),
            **augmentation_values(config.inputs, config.augment)}


def make_update(config: ExperimentConfig):
    """update(model, optimizer, x, y, values=None) -> loss: one optimizer
    step on a batch (not jitted: it runs inside the jitted steps); values:
    step_values, config's own when None. The loss is computed in float32
    whatever the model's precision."""

    def update(model, optimizer, x, y, values=None):
        values = step_values(config) if values is None else values

        def loss_fn(model):
            return segmentation_loss(model(x).astype(jnp.float32), y, values["loss_weights"], values["dice"])

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return update


#: The state weight averaging follows: the weights and the batch-norm statistics.
AVERAGED = (nnx.Param, nnx.BatchStat)


def average_decay(decay: float, step):
    """The averaging decay after `step` updates: short at first, so the average
    is not dominated by the initial weights (the warm-up of TensorFlow's
    ExponentialMovingAverage), then `decay`."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_average(average, model, decay) -> None:
    """average <- decay * average + (1 - decay) * model, over AVERAGED state."""
    mixed = jax.tree.map(lambda a, w: (decay * a + (1 - decay) * w).astype(a.dtype),
                         nnx.state(average, AVERAGED), nnx.state(model, AVERAGED))
    nnx.update(average, mixed)


def make_train_step(config: ExperimentConfig):
    """train_step(model, optimizer, data, indices, key, average=None) -> loss:
    draws the batch of images `indices` of the TrainingSet data from key
    (batches.make_batch), updates the model and, when given, the model's
    moving average (TrainConfig.ema_decay), in one jit. A partial of the
    jitted step over config's step_values (`.func`, `.args`)."""
    update = make_update(config)

    @nnx.jit
    def train_step(values, model, optimizer, data, indices, key, average=None):
        x, y = make_batch(key, data, indices, config.inputs, config.augment, values)
        loss = update(model, optimizer, x, y, values)
        if average is not None:
            update_average(average, model, average_decay(config.train.ema_decay, optimizer.step[...]))
        return loss

    return functools.partial(train_step, step_values(config))


def build_average(model, config: ExperimentConfig):
    """The model prediction builds from a checkpoint (float32, eval mode),
    holding a copy of the training model's weights: the moving average
    starts there. Its state fits the training model's, whatever the precision."""
    average = build_model(config.model)
    nnx.update(average, nnx.state(model, AVERAGED))
    average.eval()
    return average


def build_training_model(config: ExperimentConfig):
    """The model as training builds it (in the config's precision)."""
    return build_model(config.model, seed=config.train.seed, precision=config.train.precision)


class Batches:
    """Where a run's batches come from: the packed training set resident on
    the device, or each step's images streamed to it (batches.streamed_sets)
    when the set is past the device's share (TrainConfig.pipeline)."""

    def __init__(self, examples, config: ExperimentConfig, groups=None):
        self.examples = examples
        self.config = config
        # Drawn balanced across acquisition groups (TrainConfig.balance) when they are known.
        self.weights = group_weights(groups, config.train.balance) if groups is not None and config.train.balance else None
        device = jax.devices()[0]
        self.nbytes = packed_bytes(examples)
        self.mode = choose_pipeline(config.train.pipeline, self.nbytes, device_memory_bytes(device))
        self.data = jax.device_put(pack(examples)) if self.mode == "resident" else None

    @property
    def description(self) -> str:
        return f"{self.mode} ({self.nbytes / 2**20:.0f} MB)"

    def epoch(self, epoch: int, steps: int):
        """Yield (data, indices, key) for each step of an epoch."""
        t = self.config.train
        order = epoch_order(t.seed, epoch, steps, t.batch_size, len(self.examples), self.weights)
        if self.mode == "resident":
            sets = ((self.data, jnp.asarray(row)) for row in order)
        else:
            sets = streamed_sets(self.examples, order)
        for step, (data, indices) in enumerate(sets):
            yield data, indices, batch_key(t.seed, epoch, step)


def live_segmenter(forward, config: ExperimentConfig) -> Segmenter:
    """The model being trained, as prediction will use it (its scale included)."""
    return Segmenter.of([Model("training", None, config, float("nan"), forward)])


def evaluate(segmenter: Segmenter, val_samples, kinds, groups, config: ExperimentConfig, at_true_scale: bool = False):
    """Predict the validation images, calibrate post-processing on them, then
    score each on its own pixels: (metrics, config carrying the calibrated
    post-processing, probability maps at the images' sizes). at_true_scale:
    each image at the nucleus diameter its masks give, with no first pass."""
    if at_true_scale:
        sized = {fingerprint(s.image): Sizing(median_diameter(s.labels)) for s in val_samples}
        segmenter = segmenter.replace(scale_by="image", plan=sized)
    labelled = labelled_maps(segmenter, val_samples)
    post, scores = calibrate_segmenter(segmenter, labelled, base=config.postprocess)
    maps = [item.maps[0] for item in labelled]
    foreground = float(np.mean([(m[..., 0] > 0.5).mean() for m in maps]))
    metrics = {"score": float(np.mean(scores)), "images": len(scores), "scores_by_kind": mean_by(scores, kinds),
               "scores_by_group": mean_by(scores, groups), "foreground": foreground,
               # Per image, for the noise-aware choices (metrics.paired_gain) and to see which scale each image got.
               "image_ids": [s.image_id for s in val_samples], "image_scores": scores,
               "image_kinds": list(kinds), "image_groups": list(groups),  # what an out-of-fold score pools by
               "image_scales": [item.scale for item in labelled]}
    originals = [m if m.shape[:2] == s.image.shape[:2] else resize_image(m, s.image.shape[:2]) for m, s in zip(maps, val_samples)]
    return metrics, dataclasses.replace(config, postprocess=post), originals


def seconds_per_step(model, config: ExperimentConfig, batches: Batches, steps: int = 3) -> float:
    """Time a few train steps on a copy of the model, weight averaging
    included when the config averages (compilation excluded)."""
    probe = nnx.clone(model)
    average = build_average(probe, config) if config.train.ema_decay > 0 else None
    optimizer = make_optimizer(probe, config.train)
    step = make_train_step(config)
    timed = batches.epoch(0, steps + 1)
    jax.block_until_ready(step(probe, optimizer, *next(timed), average))  # compile
    start = time.perf_counter()
    for data, indices, key in timed:
        jax.block_until_ready(step(probe, optimizer, data, indices, key, average))
    return (time.perf_counter() - start) / steps


def epochs_for_budget(config: ExperimentConfig, step_seconds: float, val_pixels: int, budget_seconds: float,
                      val_images: int = 0) -> int:
    """How many epochs fit a time budget, counting validation.

    A forward pass costs about a third of a train step per pixel, and
    calibrating the post-processing about 0.1 s per validation image.
    """
    t = config.train
    pixels_per_step = t.batch_size * config.inputs.size**2
    val_seconds = val_pixels / pixels_per_step * step_seconds / 3 + 0.1 * val_images
    epoch_seconds = t.steps_per_epoch * step_seconds + val_seconds
    return max(1, int(budget_seconds // epoch_seconds))


#: A run fitted to its budget plans its epochs again after this one, and
#: after every one from then on, from its own pace: the first plan times a
#: few steps before any validation has run, and on some machines planned a
#: third of the budget too few. By the third epoch the steps are compiled
#: and a validation has run compiled too. The pace can change later (fold
#: trials sharing the cores speed up as others end: planned once at epoch 3,
#: they ended 7 minutes before their budget).
REPLAN_EPOCH = 3
#: The share of the time left a re-plan keeps in hand.
REPLAN_RESERVE = 0.03
#: The least part of an epoch's steps worth a shorter last epoch. Planned in whole epochs, four
#: of five fold trials of a 26-minute refit (2026-12-06, 150-step epochs of about 500 s with
#: their validation) stopped 6-8 minutes before their deadline with no room for a whole one.
LAST_EPOCH_SHARE = 0.25


def epochs_at_pace(epoch: int, train_seconds: float, val_seconds: float, seconds_left: float) -> int:
    """The epochs in all that fit when `epoch` has trained and is still to
    be validated, with seconds_left before the deadline, at the measured
    seconds an epoch trains and validates (REPLAN_RESERVE kept in hand).
    Time for at least LAST_EPOCH_SHARE of an epoch's steps beyond the whole
    epochs counts one more: the deadline ends it early and it is validated
    as the last (train_and_evaluate)."""
    usable = max(0.0, seconds_left * (1 - REPLAN_RESERVE) - val_seconds)
    whole, rest = divmod(usable, max(train_seconds + val_seconds, 1e-9))
    shorter = rest - val_seconds >= LAST_EPOCH_SHARE * train_seconds
    return epoch + int(whole) + int(shorter)


def train_and_evaluate(
    config: ExperimentConfig,
    train_samples,
    val_samples,
    workdir: Path,
    *,
    time_budget_s: float | None = None,
    fit_epochs_to_budget: bool = False,
    on_step=None,
    on_epoch=None,
    validate_on=None,
    validate_between: bool = True,
    groups: dict | None = None,
    example_cache: Path | None = None,
    plan_epochs=None,
) -> list[EpochResult]:
    """Train a U-Net on labelled samples, validating and checkpointing every epoch.

    Resumes from the latest checkpoint in workdir/checkpoints (its stored
    config then wins). With time_budget_s, training stops cleanly before
    the budget is spent; fit_epochs_to_budget also sets the number of
    epochs (so the learning-rate schedule ends with the budget) from timed
    steps, and plans them again after each epoch from REPLAN_EPOCH (or the
    first plan's last epoch, if earlier) on, from the run's own
    pace (epochs_at_pace). on_step(step, loss) and on_epoch(EpochResult, validation maps) report progress.
    validate_on(epoch) gives the positions in val_samples that epoch is
    validated (and calibrated) on, or a Validation; default all. An epoch
    given none is neither validated nor saved nor reported, unless the
    budget stops training there (it then validates as the last epoch would).
    validate_between=False validates (all of val_samples, without
    validate_on) only the run's first epoch, which times a validation for
    the deadline and the re-plans, and its last: the planned last or the
    one the budget stops (a fold trial, whose out-of-fold score is its last
    epoch's). groups: every sample's acquisition group by image id (computed here
    when not given). example_cache: a folder keeping the prepared
    training examples (nucjax.inputs.cached_training_examples).
    plan_epochs(epoch, unit_seconds): called after each epoch's training
    with the seconds an epoch of steps takes once compiled (the first step,
    which may compile, left out); a number it returns becomes the run's
    epochs in all, and the learning-rate schedule is planned again to end
    there (a halving survivor fitting its units to the deadline).
    Raises TrainingDiverged on NaN or exploding loss or all-foreground output.
    """
    start_time = time.monotonic()
    workdir = Path(workdir).absolute()
    resume = latest_checkpoint(workdir)
    if resume is not None:
        config = resume.config
    model = build_training_model(config)
    val_samples = list(val_samples)
    if not train_samples or not val_samples:
        raise ValueError(f"need training and validation images, got {len(train_samples)} and {len(val_samples)}")
    val_kinds = [image_kind(s.image) for s in val_samples]
    if groups is None:
        groups = run_groups(train_samples, val_samples)
    val_groups = [groups[s.image_id] for s in val_samples]
    examples = (cached_training_examples(example_cache, train_samples, config.model.model, config.inputs, config.augment,
                                         config.train.seed) if example_cache is not None else
                training_examples(train_samples, config.model.model, config.inputs, config.augment, config.train.seed))
    batches = Batches(examples, config, [groups[s.image_id] for s in train_samples])

    if resume is None and fit_epochs_to_budget and time_budget_s:
        step_seconds = seconds_per_step(model, config, batches)
        val_pixels = sum(s.image.shape[0] * s.image.shape[1] for s in val_samples)
        if config.inputs.rescales:
            val_pixels *= 2  # the first pass's pyramid, and for large nuclei a second pass
        remaining = time_budget_s - (time.monotonic() - start_time)
        epochs = epochs_for_budget(config, step_seconds, val_pixels, remaining, len(val_samples))
        config = config.replace(train={"epochs": epochs})  # batches read only the seed and batch size

    optimizer = make_optimizer(model, config.train)
    # What is validated, saved as the checkpoint's model and predicted with: the
    # moving average, or the weights themselves when averaging is off. Either way
    # validation runs the network prediction builds from the checkpoint (float32,
    # eval mode): the same program on the same weights, so the same maps.
    averaging = config.train.ema_decay > 0
    average = build_average(model, config) if averaging else None
    first_epoch = 1
    if resume is not None:
        restore_into(resume, average if averaging else model, optimizer, training=model if averaging else None)
        first_epoch = resume.epoch + 1
    model.train()
    train_step = make_train_step(config)
    predictor = Predictor(build_model(config.model))
    validated = average if averaging else model
    deadline = start_time + time_budget_s if time_budget_s else None
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json())

    results = []
    smallest_loss = float("inf")
    val_seconds = last_val_seconds = 0.0
    step = int(optimizer.step[...])
    if plan_epochs is None and resume is None and fit_epochs_to_budget and deadline is not None:
        # Fitted to the budget: the epochs are planned again from REPLAN_EPOCH on, through
        # the same hook a caller's plan (a halving survivor's) takes, or from the first plan's
        # last epoch if earlier (fold trials sharing two cores planned 1-2 epochs at their
        # start and, not planned again, ended 7-14 minutes before a 27-minute budget).
        def plan_epochs(epoch, unit_seconds):
            if epoch >= min(REPLAN_EPOCH, config.train.epochs):
                return epochs_at_pace(epoch, unit_seconds, last_val_seconds, deadline - time.monotonic())
            return None

    def check(loss: float, step: int) -> None:
        nonlocal smallest_loss
        if not np.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at step {step}; lower the learning rate (now {config.train.learning_rate:g})")
        smallest_loss = min(smallest_loss, loss)
        if step > config.train.warmup_steps and loss > config.train.divergence_factor * max(smallest_loss, 1e-3):
            raise TrainingDiverged(
                f"loss exploded to {loss:.3g} at step {step} (lowest so far {smallest_loss:.3g}); "
                f"lower the learning rate (now {config.train.learning_rate:g})"
            )
        losses.append(loss)
        if on_step is not None:
            on_step(step, loss)

    for epoch in itertools.count(first_epoch):
        if epoch > config.train.epochs:  # read each epoch: plan_epochs may change it
            break
        epoch_start = time.monotonic()
        steady_start = None  # when the epoch's first step has run: the steps after it are compiled
        losses = []
        stopped_early = False
        pending = None  # the last step's loss, read after the next step is queued so the device never idles
        for data, indices, key in batches.epoch(epoch, config.train.steps_per_epoch):
            if deadline and pending is not None and time.monotonic() + val_seconds * 1.2 + 5 > deadline:
                stopped_early = True
                break
            loss = train_step(model, optimizer, data, indices, key, average)
            step += 1
            if pending is not None:
                check(float(pending[0]), pending[1])
                steady_start = steady_start or time.monotonic()
            pending = (loss, step)
        if pending is not None:
            check(float(pending[0]), pending[1])
        train_seconds = time.monotonic() - epoch_start
        unit_seconds = ((time.monotonic() - steady_start) * len(losses) / (len(losses) - 1)
                        if steady_start and len(losses) > 1 else train_seconds)
        planned = plan_epochs(epoch, unit_seconds) if plan_epochs is not None and not stopped_early else None
        if planned and planned != config.train.epochs:
            config = config.replace(train={"epochs": max(planned, epoch)})
            plan_schedule(optimizer, config.train.total_steps)

        validated_now = validate_between or epoch == first_epoch or epoch >= config.train.epochs or stopped_early
        validation = as_validation(validate_on(epoch) if validate_on is not None else
                                   range(len(val_samples)) if validated_now else ())
        if stopped_early and not validation.images:
            validation = as_validation(validate_on(config.train.epochs))
        if not validation.images:
            continue
        val_start = time.monotonic()
        chosen = validation.images
        metrics, config, maps = evaluate(live_segmenter(predictor.bind(validated), config), [val_samples[i] for i in chosen],
                                         [val_kinds[i] for i in chosen], [val_groups[i] for i in chosen], config,
                                         validation.at_true_scale)
        # The longest so far: the budget must leave room for a whole-split validation after a subset's.
        last_val_seconds = time.monotonic() - val_start
        val_seconds = max(val_seconds, last_val_seconds)
        if metrics["foreground"] > ALL_FOREGROUND:
            raise TrainingDiverged(
                f"epoch {epoch}: {100 * metrics['foreground']:.0f}% of validation pixels predicted as nucleus "
                "(an all-foreground collapse); lower the learning rate or check the targets"
            )
        step = int(optimizer.step[...])
        metrics["loss"] = float(np.mean(losses)) if losses else float("nan")
        metrics["unit_seconds"] = unit_seconds
        info: CheckpointInfo = save_checkpoint(
            workdir / "checkpoints" / f"epoch_{epoch:04d}", validated, optimizer, config, epoch, step, metrics,
            training=model if averaging else None,
        )
        prune_checkpoints(workdir, config.train.max_to_keep)
        result = EpochResult(
            epoch=epoch,
            epochs=config.train.epochs,
            step=step,
            loss=metrics["loss"],
            score=metrics["score"],
            scores_by_kind=metrics["scores_by_kind"],
            scores_by_group=metrics["scores_by_group"],
            foreground=metrics["foreground"],
            images_per_s=len(losses) * config.train.batch_size / max(train_seconds, 1e-9),
            seconds=time.monotonic() - epoch_start,
            checkpoint=str(info.path),
            postprocess=dataclasses.asdict(config.postprocess),
            stopped_early=stopped_early,
            pipeline=batches.description,
            validated_images=len(chosen),
            validation_seconds=last_val_seconds,
        )
        results.append(result)
        if on_epoch is not None:
            on_epoch(result, maps)
        if stopped_early:
            break
    return results
