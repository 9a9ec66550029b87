"""Group k-fold refit: one configuration (the search's winner, or --refit
TARGET) trained once per fold as Ray Tune trials side by side, every
acquisition group validated once; the out-of-fold score pooled from the
fold models' own validations; the fold models calibrated as one ensemble
on their pooled out-of-fold maps and recorded for ensemble.predict and
Segmenter.load.

The experiment folder gains:

    folds/trial_<id>/   each fold's trial: Tune's logs and kept checkpoints
    folds.csv           one row per fold: its trial, images, score, chosen checkpoint
    ensemble.json       the fold ensemble (mean of the fold models, pooled calibration)

and experiment.json's search record a 'folds' entry (the out-of-fold score
by kind and by group, the ensemble's pooled score, the time the refit had).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from nucjax.experiment import FOLDS_FOLDER, Experiment
from nucjax.inputs import InputConfig
from nucjax.segmenter import scales_text

#: The share of a --time-budget the refit takes when there are folds; the search has the rest.
REFIT_SHARE = 0.5
#: Folds a budgeted search refits by default.
DEFAULT_FOLDS = 5
#: Of the refit's time, what the fold ensemble's calibration keeps (each fold model predicts its own fold
#: once more, at one scale and at the multi-scale factors; then a calibration for each): ENSEMBLE_SHARE,
#: and at least ENSEMBLE_MIN_S and ENSEMBLE_S_PER_IMAGE per out-of-fold image at the default nucleus
#: diameter, since its work follows the images' pixels, not the refit's length: a model of a larger
#: diameter shrinks images less, (diameter / 16) ** 2 the pixels. Measured on the real set on 2 cores:
#: 339 s for 590 images after a 56-minute refit (150 s when it calibrated one scale), about 300 s for
#: 607 after a 26-minute one (which a share alone, 178 s, did not hold), about 420 s for 607 at
#: diameter 20.
ENSEMBLE_SHARE = 0.1
ENSEMBLE_MIN_S = 60.0
ENSEMBLE_S_PER_IMAGE = 0.55
FOLDS_FILE = "folds.csv"
FOLD_COLUMNS = ("fold", "trial", "images", "score", "epoch", "step", "node", "checkpoint", "error")


class RefitError(Exception):
    """A refit target that cannot be used; the message names it."""


def target_params(target: Path) -> dict:
    """The flat settings (nucjax.config.from_params) of --refit TARGET: a
    search trial's folder (Tune's params.json), a checkpoint or a training
    run (its stored config, trained for the steps of that checkpoint), or a
    JSON file of flat settings or of a whole config."""
    from nucjax.config import ExperimentConfig, check_params, to_params
    from nucjax.checkpoints import CheckpointError, resolve_checkpoint

    target = Path(target)
    if not target.exists():
        raise RefitError(f"--refit {target}: no such trial, checkpoint, run or config file")
    try:
        if target.is_file():
            data = json.loads(target.read_text())
            if set(data) <= {"model", "inputs", "augment", "train", "postprocess"}:
                return to_params(ExperimentConfig.from_dict(data))
            check_params(data)
            return data
        if (target / "params.json").is_file():
            params = json.loads((target / "params.json").read_text())
            check_params(params)
            return params
        info = resolve_checkpoint(target)
    except (ValueError, OSError) as err:
        raise RefitError(f"--refit {target}: unusable ({err})") from None
    except CheckpointError as err:
        raise RefitError(f"--refit {target}: {err}") from None
    params = to_params(info.config)
    # Trained as long as that checkpoint was, in whole epochs.
    params["epochs"] = max(1, math.ceil(info.step / info.config.train.steps_per_epoch))
    return params


def fold_params(params: dict, args, folds: int, steps_per_epoch: int | None = None, steps: int | None = None) -> dict:
    """A trial's flat params as a fold of a refit: the command's split
    (so the search's held-back test images stay held back), the fold a
    grid over 0..folds-1; steps_per_epoch (default the params') and, when
    given, epochs to train `steps` steps."""
    from ray import tune

    params = {**params, "split": "group", "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
              "seed": args.seed, "folds": folds, "fold": tune.grid_search(list(range(folds)))}
    if steps_per_epoch:
        params["steps_per_epoch"] = steps_per_epoch
    if steps:
        params["epochs"] = max(1, math.ceil(steps / int(params["steps_per_epoch"])))
    return params


def target_fold_params(params: dict, args, folds: int, epoch_steps: int, budgeted: bool) -> dict:
    """--refit TARGET's flat params as a fold: epochs of the space's length
    (epoch_steps), as the search's own refit trains, and, without a budget,
    as many steps as the target trained. A halving trial's params hold its
    rung unit as the epoch (37 steps on the real set): kept, the folds
    validated every unit and spent most of their time validating."""
    from nucjax.config import from_params

    steps = None if budgeted else from_params(params).train.total_steps
    return fold_params(params, args, folds, epoch_steps, steps)


def trial_share(args, ray, folds: int) -> tuple[float, float]:
    """(CPUs, GPUs) per fold trial: the search's slots divided so that every
    fold runs at once, whole slots where there are as many as folds (one per
    GPU, or per CPU slot), shares of them where there are fewer, so no fold
    waits for another and all end at the budget together."""
    from search.tuner import slots

    per_slot = math.ceil(folds / slots(args, ray))
    return args.cpus_per_trial / per_slot, args.gpus_per_trial / per_slot


def run_refit(args, ray, storage: str, samples, params: dict, folds: int, seconds: float | None) -> list[dict]:
    """Train params once per fold as Ray Tune trials, all at once; each
    trains `seconds` (its epochs fitted to them) or, without, its params'
    epochs. Returns one row per fold (FOLD_COLUMNS), fold order."""
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback

    from search.tuner import chosen_checkpoint, example_cache
    from search.trainable import run_trial, trial_environment

    cpus, gpus = trial_share(args, ray, folds)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, samples=list(samples), environment=trial_environment(cpus, gpus),
                             example_cache=example_cache(), budget_s=seconds),
        {"cpu": cpus, "gpu": gpus},
    )
    run_config = tune.RunConfig(
        name=FOLDS_FOLDER, storage_path=storage, callbacks=[TBXLoggerCallback()],
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        # The latest epochs: a fold's checkpoint is chosen as nucjax.train chooses (latest unless beaten beyond the noise).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=args.keep_checkpoints), verbose=args.verbose,
    )
    tune_config = tune.TuneConfig(
        metric="score", mode="max", num_samples=1, max_concurrent_trials=folds,
        trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
    )
    results = tune.Tuner(trainable, param_space=params, tune_config=tune_config, run_config=run_config).fit()
    rows = []
    for result in results:
        fold = int(result.config["fold"])
        history = result.metrics_dataframe
        chosen = chosen_checkpoint(result, None)
        if chosen is None:
            rows.append({"fold": fold, "trial": Path(result.path).name, "error": str(result.error or "no checkpoint")})
            continue
        node = history["node"].iloc[-1] if history is not None and "node" in history else ""
        rows.append({"fold": fold, "trial": Path(result.path).name, "images": chosen.metrics["images"],
                     "score": chosen.score, "epoch": chosen.epoch, "step": chosen.step, "node": node,
                     "checkpoint": str(chosen.path), "error": str(result.error) if result.error else ""})
    return sorted(rows, key=lambda r: r["fold"])


def ensemble_task(checkpoints: list[str], samples, environment: dict) -> dict:
    """A Ray task (JAX starts in it, not in the driver): the fold models'
    ensemble calibrated on their pooled out-of-fold maps, at one scale or at
    several where that scores higher beyond the noise (nucjax.folds.chosen_fold_ensemble)."""
    import os

    os.environ.update(environment)
    from nucjax.folds import chosen_fold_ensemble
    from nucjax.segmenter import load_model

    found, tried = chosen_fold_ensemble([load_model(Path(c)) for c in checkpoints], samples)
    return {"postprocess": asdict(found.postprocess), "score": found.score, "images": len(found.image_scores),
            "scales": list(found.scales), "tried": tried}


def ensemble_reserve(seconds: float, images: int, diameter: float = InputConfig.diameter) -> float:
    """Seconds of a refit of `seconds` kept for the fold ensemble's calibration over `images`
    out-of-fold images, predicted by models trained at nucleus `diameter` (px)."""
    per_image = ENSEMBLE_S_PER_IMAGE * (diameter / InputConfig.diameter) ** 2
    return max(seconds * ENSEMBLE_SHARE, ENSEMBLE_MIN_S, per_image * images)


def refit(args, ray, experiment: Experiment, samples, params: dict, folds: int, seconds: float | None,
          source: str) -> tuple[Experiment, str]:
    """The whole refit: fold trials, the out-of-fold score, the fold
    ensemble calibrated and recorded. Returns the experiment with its
    record updated (and written) and the summary's lines."""
    from nucjax.folds import out_of_fold
    from nucjax.checkpoints import read_checkpoint
    from search.trainable import trial_environment

    from search.tuner import DEADLINE_MARGIN_S, TRIAL_START_S

    started = time.monotonic()
    # A fold trains what is left once its start, its last report and the ensemble's calibration are kept aside.
    images = len(samples) - len(experiment.test_ids)
    diameter = float(params.get("diameter", InputConfig.diameter))
    reserve = ensemble_reserve(seconds, images, diameter) + TRIAL_START_S + DEADLINE_MARGIN_S if seconds else 0.0
    trial_seconds = max(seconds - reserve, 1.0) if seconds else None
    print(f"refitting {source} on {folds} folds" + (f", {trial_seconds / 60:.1f} minutes each" if seconds else ""), flush=True)
    rows = run_refit(args, ray, str(experiment.folder), samples, params, folds, trial_seconds)
    write_fold_rows(experiment.folder / FOLDS_FILE, rows)
    done = [r for r in rows if r.get("checkpoint")]
    record = {"folds": folds, "source": source, "seconds_per_fold": trial_seconds, "share": seconds / (60 * args.time_budget) if seconds and args.time_budget else None,
              "members": [str(Path(r["checkpoint"]).relative_to(experiment.folder)) for r in done]}
    if len(done) < folds:
        record["failed"] = [r["fold"] for r in rows if not r.get("checkpoint")]
    if done:
        record["oof"] = out_of_fold([(r["fold"], read_checkpoint(Path(r["checkpoint"])).metrics) for r in done])
        # The calibration has one node to itself: the largest (a task cannot span nodes).
        cpus = min(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1), 8)
        task = ray.remote(ensemble_task).options(num_cpus=cpus if not args.gpus_per_trial else args.cpus_per_trial,
                                                 num_gpus=args.gpus_per_trial)
        ensemble = ray.get(task.remote([r["checkpoint"] for r in done], list(samples),
                                       trial_environment(cpus, args.gpus_per_trial)))
        record["ensemble"] = ensemble
        experiment.write_ensemble([Path(r["checkpoint"]) for r in done], "mean", None, ensemble["postprocess"],
                                  tuple(ensemble["scales"]))
    record["seconds"] = time.monotonic() - started
    experiment = experiment.with_search(folds=record)
    experiment.write()
    return experiment, fold_summary(experiment.folder, record)


def write_fold_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FOLD_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def fold_summary(folder: Path, record: dict) -> str:
    """The refit's lines of the command's summary."""
    if "oof" not in record:
        return f"refit: no fold trained (see {folder / FOLDS_FILE})"
    oof = record["oof"]
    kinds = ", ".join(f"{kind} {score:.4f}" for kind, score in oof["by_kind"].items())
    lines = [f"out-of-fold score: {oof['score']:.4f} over {oof['images']} images in {len(oof['folds'])} folds ({kinds})",
             "folds: " + ", ".join(f"{f['fold']}: {f['score']:.4f} ({f['images']})" for f in oof["folds"])]
    if "ensemble" in record:
        lines.append(f"fold ensemble ({len(record['members'])} members, mean): pooled out-of-fold {record['ensemble']['score']:.4f} "
                     f"with one calibration; python -m ensemble.predict --experiment {folder} --data DIR --out submission.csv")
        lines += [f"  {scales_tried(entry)}" for entry in record["ensemble"].get("tried", [])]
    if record.get("failed"):
        lines.append(f"folds that failed: {record['failed']} (see {folder / FOLDS_FILE})")
    return "\n".join(lines)


def scales_tried(entry: dict) -> str:
    """One line for one multi-scale candidate of the fold ensemble (chosen_fold_ensemble's record)."""
    scales = scales_text(entry["scales"])
    gain = f", {entry['gain']:+.4f} (90% interval {entry['low']:+.4f} to {entry['high']:+.4f})" if "gain" in entry else ""
    return f"scales {scales}: {entry['score']:.4f}{gain}{', kept' if entry['kept'] else ''}"
