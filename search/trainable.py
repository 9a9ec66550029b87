"""The Ray Tune trainable: a thin translation from a trial's flat config to
nucjax calls. Training, validation, calibration and checkpoints are all
nucjax.train's; this module only reports them to Tune and resumes from
Tune's checkpoint.

JAX is imported inside the trial, after the trial's environment (threads,
GPU memory share, compilation cache) is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ray.tune.search.sample import Domain

from nucjax.models.memory import multiply_adds
from search.halving import SurvivorPace
from search.spaces import contender

#: What a trial reports each epoch, besides its config.
METRICS = ("score", "loss", "epoch", "epochs", "foreground", "images_per_s")
#: The metric Tune ranks a trial's checkpoints by (see run_trial).
RANK_SCORE = "rank_score"
#: A step's time grows as its multiply-adds times (REFERENCE_WIDTH / width) ** WIDTH_EFFICIENCY less: measured
#: (bench/unit_cost.py, 2-core Xeon) widths 24 and 32 took 0.75 and 0.64 of their multiply-adds' ratio to width 16.
REFERENCE_WIDTH, WIDTH_EFFICIENCY = 16, 0.6
#: The fewest steps a configuration may train per unit to be drawn. In the 60-minute search of 2026-12-05
#: (docs/benchmarks.md) the draws that trained 2-9 steps per unit scored 0.01-0.25 at the first rung, by how
#: they were initialised, and took 84-293 core-seconds to start and compile a 42-second unit.
MIN_UNIT_STEPS = 16


def experiment_config(params: dict, device_bytes: int | None = None):
    """The ExperimentConfig of a trial's flat params (see search.spaces),
    through nucjax.config.from_params; batch_size None is chosen here."""
    from nucjax.batches import RESIDENT_SHARE
    from nucjax.config import from_params
    from nucjax.models.memory import largest_batch
    from nucjax.models.unet_config import UNetConfig

    params = dict(params)
    if params.get("batch_size") is None:
        # On a GPU, fill its share of memory; on a CPU, 8 is what pays.
        model = UNetConfig(params["model"], int(params.get("depth", 4)), int(params.get("base_filters", 16)),
                           out_channels=2 if params.get("border", True) else 1)
        # The training set may take up to RESIDENT_SHARE of the device (nucjax.batches): batches get the rest.
        spare = int(device_bytes * (1 - RESIDENT_SHARE)) if device_bytes else 0
        params["batch_size"] = min(32, largest_batch(model, int(params.get("size", 128)), spare)) if device_bytes else 8
    return from_params(params)


def device_config(params: dict):
    """experiment_config on the device this process trains on (JAX imported here)."""
    import jax

    from nucjax.batches import device_memory_bytes

    device = jax.devices()[0]
    return experiment_config(params, None if device.platform == "cpu" else device_memory_bytes(device))


def step_cost(config) -> float:
    """The cost of one training step of a config, in multiply-adds at nucjax.train's width:
    a forward pass's multiply-adds per image, times the batch, times
    (16 / base_filters) ** WIDTH_EFFICIENCY, since wider convolutions do more
    multiply-adds per second (bench/unit_cost.py)."""
    size = config.inputs.size
    efficiency = (REFERENCE_WIDTH / config.model.base_filters) ** WIDTH_EFFICIENCY
    return float(config.train.batch_size * multiply_adds(config.model, size, size) * efficiency)


def affordable(space: dict, unit_steps: int):
    """Whether a point of the space (its varied values) trains at least
    MIN_UNIT_STEPS steps in a unit of unit_steps of its contender's steps
    (search.spaces.contender), the work every configuration's unit gets;
    the contender itself always. Costs at the CPU's batch of 8: on a GPU,
    where the batch follows memory, a guide."""
    constants = {key: value for key, value in space.items() if not isinstance(value, Domain)}

    def cost(point: dict) -> float:
        return step_cost(experiment_config({**constants, **point}))

    most = max(unit_steps / MIN_UNIT_STEPS, 1.0) * cost(contender(space))  # the contender always
    return lambda point: cost(point) <= most


def equal_time_units(config, halving):
    """config with its units (steps_per_epoch) of the halving's unit of work
    (HalvingTrial.unit_steps), its warm-up scaled alike."""
    steps = halving.unit_steps(step_cost(config), config.train.steps_per_epoch)
    if steps == config.train.steps_per_epoch:
        return config
    warmup = max(1, round(config.train.warmup_steps * steps / config.train.steps_per_epoch))
    return config.replace(train={"steps_per_epoch": steps, "warmup_steps": warmup})


def trial_environment(cpus: float, gpus: float) -> dict:
    """Environment variables a trial needs before JAX starts: the
    driver's compilation cache (per node on a cluster), the CPU
    convolution flag (nucjax.cli.jax_environment), the GPU memory share."""
    from nucjax.cli import jax_environment

    single_thread = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" if cpus <= 1 else ""
    env = {**jax_environment(xla_flags=single_thread), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if gpus:
        # Never the whole card: a trial with a fraction of a GPU gets that share of its memory.
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(gpus, 1.0) * 0.9:.3f}"
    else:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def score_simple(params: dict, val) -> dict:
    """The report's threshold model with the shared post-processing, scored on val."""
    from nucjax.metrics import image_score
    from nucjax.postprocess import PostprocessConfig, instances
    from nucjax.preprocess import preprocess

    config = PostprocessConfig(method=params["postprocess"], threshold=float(params["threshold"]),
                               min_size=int(params["min_size"]), peak_radius=int(params["peak_radius"]))
    scores = [image_score(s.labels, instances(preprocess(s.image)[..., None] / 255.0, config)).score for s in val]
    return {"score": float(sum(scores) / len(scores)), "epoch": 1}


def run_trial(params: dict, train=None, val=None, environment: dict | None = None, halving=None, groups: dict | None = None,
              example_cache: str | None = None, samples=None, budget_s: float | None = None) -> None:
    """The trainable: train (or score) one trial, reporting every epoch it validates to Tune.
    halving (search.halving.HalvingTrial): which units are validated on what, and the deadline.
    groups: the acquisition group of every image id; example_cache: where prepared training
    examples are kept between trials and restarts. samples: instead of train and val, every
    labelled image, split as the trial's config says (a fold of a refit: search.refit);
    budget_s: seconds the trial trains, its epochs fitted to them, validated at the first and the last."""
    os.environ.update(environment or {})
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()
    if params["model"] == "simple":
        tune.report({**score_simple(params, val), "node": node})
        return

    from nucjax.postprocess import PostprocessConfig
    from nucjax.train.film import FILM_IMAGES, film_frame, write_frame
    from nucjax.train.loop import train_and_evaluate

    config = device_config(params)
    if halving is not None:
        config = equal_time_units(config, halving)
    if samples is not None:
        # A fold: its own split of every image, grouped as nucjax.predict --split val groups it.
        from nucjax.data import run_groups

        train, val, _ = config.train.split_samples(samples)
        groups = run_groups(train, val)
    # Scratch space: Tune keeps the reported checkpoints in the experiment.
    workdir = Path(tempfile.mkdtemp(prefix="nucjax-trial-"))
    film = workdir / "film"
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        # Resume: put Tune's checkpoint where train_and_evaluate looks for the latest, and the film so far back.
        with checkpoint.as_directory() as folder:
            record = json.loads((Path(folder) / "checkpoint.json").read_text())
            epoch = record["epoch"]
            if halving is not None and epoch >= halving.replans_at:
                # A survivor interrupted: its units as it planned them (see plan_epochs), not the plan's.
                halving = dataclasses.replace(halving, total_units=record["config"]["train"]["epochs"])
            shutil.copytree(folder, workdir / "checkpoints" / f"epoch_{epoch:04d}")
            if (Path(folder) / "film").is_dir():
                shutil.copytree(Path(folder) / "film", film, dirs_exist_ok=True)

    pace = SurvivorPace()

    def plan_epochs(epoch, unit_seconds):
        # A survivor, after every unit: its units planned anew to end at the deadline, at its pace so far.
        nonlocal halving
        if halving is None or epoch < halving.replans_at:
            return None
        now = time.time()
        halving = halving.survivor(epoch, pace.unit_seconds(epoch, unit_seconds, now), now, pace.full_seconds())
        return halving.total_units

    def on_epoch(result, maps):
        # The per-epoch film so far travels in every checkpoint, so the newest kept one holds all of it.
        write_frame(film_frame([s.image for s in val[:FILM_IMAGES]], [s.labels for s in val[:FILM_IMAGES]],
                               maps[:FILM_IMAGES], PostprocessConfig(**result.postprocess)), film, result.epoch)
        shutil.copytree(film, Path(result.checkpoint) / "film", dirs_exist_ok=True)
        pace.validated(result.epoch, result.validation_seconds, result.validated_images == len(val))
        metrics = {name: getattr(result, name) for name in METRICS}
        metrics.update({f"score_{kind}": value for kind, value in result.scores_by_kind.items()})
        metrics.update({f"score_group_{group}": value for group, value in result.scores_by_group.items()})
        metrics.update({"calibrated": json.dumps(result.postprocess), "node": node, "batch_size": config.train.batch_size,
                        "unit_steps": config.train.steps_per_epoch,
                        "pipeline": result.pipeline, "precision": config.train.precision,
                        "validated_images": result.validated_images, "seconds": result.seconds,
                        # What Tune keeps checkpoints by: whole-split scores above any subset's (a halving
                        # search's pruning rungs), which prediction would not reproduce.
                        RANK_SCORE: result.score - (result.validated_images < len(val))})
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(result.checkpoint))

    try:
        validate_on = (lambda epoch: halving.validate_on(epoch, len(val))) if halving is not None else None
        # Stop, validate and report before the deadline rather than be cut mid-unit by Tune's.
        budget = halving.deadline - time.time() if halving is not None and halving.deadline else budget_s
        # A fold fitted to its budget validates its first epoch and its last: a validation of its fold
        # took a fifth to a third of each epoch of a 26-minute refit (2026-12-06), and its out-of-fold
        # score is the last epoch's.
        train_and_evaluate(config, train, val, workdir, on_epoch=on_epoch, validate_on=validate_on, time_budget_s=budget,
                           fit_epochs_to_budget=budget_s is not None and checkpoint is None,
                           validate_between=budget_s is None,
                           groups=groups, example_cache=Path(example_cache) if example_cache else None,
                           plan_epochs=plan_epochs if halving is not None else None)  # else the budget's own re-plan
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


#: JAX's events for making a program: lowering it, and XLA compiling it (or reading it from the cache).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/core/compile/backend_compile_duration")
#: Of XLA's, the part that read a program from the persistent cache: what a compilation costs once cached.
CACHE_READ_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"
_compile_seconds = {"all": 0.0, "xla": 0.0, "read": 0.0, "listening": False}


def compile_seconds(part: str = "all") -> float:
    """Seconds this process has spent making JAX programs since the first
    call: 'all' of it, or 'saved': the XLA compilations the persistent
    cache did not hold, what a later process finds there instead."""
    import jax

    if not _compile_seconds["listening"]:
        def listen(event: str, duration: float, **_):
            if event in COMPILE_EVENTS:
                _compile_seconds["all"] += duration
            if event == COMPILE_EVENTS[1]:
                _compile_seconds["xla"] += duration
            elif event == CACHE_READ_EVENT:
                _compile_seconds["read"] += duration

        jax.monitoring.register_event_duration_secs_listener(listen)
        _compile_seconds["listening"] = True
    if part == "saved":
        return _compile_seconds["xla"] - _compile_seconds["read"]
    return _compile_seconds["all"]


def probe_trial(params: dict, train, val, subset, unit_steps: int, environment: dict | None = None,
                groups: dict | None = None, example_cache: str | None = None) -> dict:
    """What a halving plan is made from (search.halving.plan_halving), measured
    by training one trial's params for two units of unit_steps steps, each
    validated on the positions `subset` of val: the first as prediction
    does (first pass included), the second at the masks' nucleus scale (as
    the pruning rungs score). Compilation is timed apart and counted in a
    trial's start, not in the validations: a trial pays it once, and finds
    most programs in the shared cache. Seconds of: a training step
    ('step'), the subset at the masks' scale ('subset') and as prediction
    ('predicted_subset'), a trial's start (data, model, compilation:
    'start'), and a trial's start once the shared cache holds the probe's
    programs ('restart': every trial after the first few, and every
    paused trial resumed); and the probe's own ('seconds', of which
    'compile')."""
    started = time.monotonic()
    os.environ.update(environment or {})
    from nucjax.config import Validation
    from nucjax.train.loop import train_and_evaluate

    config = device_config({**params, "epochs": 2, "steps_per_epoch": unit_steps})
    workdir = Path(tempfile.mkdtemp(prefix="nucjax-probe-"))
    first, first_saved = compile_seconds(), compile_seconds("saved")
    validating = []  # compilation seconds so far when each unit's validation starts and ends

    def validate_on(epoch):
        validating.append([compile_seconds()])
        return Validation(tuple(subset), epoch == 2)

    try:
        results = train_and_evaluate(config, train, val, workdir, validate_on=validate_on,
                                     on_epoch=lambda result, maps: validating[-1].append(compile_seconds()),
                                     groups=groups, example_cache=Path(example_cache) if example_cache else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - started
    step_s = config.train.batch_size / results[1].images_per_s  # the second unit: compiled, warm
    # A unit's validation: its time after training, less what it spent compiling (the first unit's the
    # prediction programs, the second's those of the masks' scales).
    warm = [max(r.seconds - unit_steps * config.train.batch_size / r.images_per_s - (after - before), 0.0)
            for r, (before, after) in zip(results, validating)]
    predicted_s, subset_s = warm
    start_s = total - 2 * unit_steps * step_s - predicted_s - subset_s
    return {"step": step_s, "subset": subset_s, "predicted_subset": predicted_s, "start": start_s,
            "restart": start_s - (compile_seconds("saved") - first_saved),
            "seconds": total, "compile": compile_seconds() - first, "step_cost": step_cost(config)}
