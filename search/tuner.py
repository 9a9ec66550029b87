"""Setting up a search experiment and writing what it found: the Tuner, the
data handed to trials, and the experiment record (nucjax.experiment:
experiment.json, results.csv) with scores.png."""

from __future__ import annotations

import time
from pathlib import Path

from nucjax.data import SEARCH_SMOKE
from nucjax.experiment import Experiment, read_experiment


def load_split(args, smoke: bool):
    """(data root, train, val, test samples), split by --split."""
    from nucjax.cli import load_data, synthetic_set
    from nucjax.data import split_samples

    root = synthetic_set(SEARCH_SMOKE) if smoke else args.data
    dataset = load_data(root, args.strict, labelled=True)
    samples = dataset.samples
    parts = split_samples(samples, args.val_fraction, args.test_fraction, seed=args.seed, method=args.split)
    if not parts[0] or not parts[1]:
        from nucjax.cli import fail

        fail(f"{root}: too few labelled images for a training and a validation split ({len(samples)} loaded)")
    return Path(root).resolve(), *parts  # resolved: the record and report name no '..'


def make_report_refresh(folder: Path, every_s: float = 20.0):
    """A Tune callback that rewrites folder/report.html (no failure gallery)
    as trials report, at most every every_s seconds, so the page shows a
    running search."""
    from ray import tune

    from search.report import LiveSearch, write_report

    class ReportRefresh(tune.Callback):
        """Marks the page stale when a trial reports, errs or ends; rewrites it
        at the end of Tune's next step, once the loggers have written the
        trial's files, at most every every_s seconds (at once for a trial's
        first report, errors and ends)."""

        def __init__(self):
            self.written = 0.0
            self.stale = self.urgent = False
            self.reported: set[str] = set()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.stale = True
            if trial.trial_id not in self.reported:  # a new trial shows at once
                self.reported.add(trial.trial_id)
                self.urgent = True

        def on_trial_error(self, iteration, trials, trial, **info):
            self.stale = self.urgent = True

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.stale = self.urgent = True

        def on_step_end(self, iteration, trials, **info):
            if self.stale and (self.urgent or time.monotonic() - self.written >= every_s):
                self.written, self.stale, self.urgent = time.monotonic(), False, False
                try:
                    # Tune's trial objects know what the experiment folder does not yet (search.report.LiveSearch).
                    staged = [Path(t.local_path) for t in trials if t.local_path]
                    ended = frozenset(Path(t.local_path).name for t in trials
                                      if t.local_path and t.status in ("TERMINATED", "ERROR"))
                    live = LiveSearch(staging=staged[0].parent if staged else None, ended=ended)
                    write_report(folder, gallery=False, running=True, live=live)
                except Exception as err:  # a report must never stop the search
                    print(f"warning: report not refreshed: {err}", flush=True)

    return ReportRefresh()


#: The validation images early rungs score (all groups represented), and
#: the units an epoch of the space is cut into: trials report that often,
#: but train at least MIN_UNIT_TRAIN_S (and twice their validation) between reports.
SUBSET_IMAGES = 16
UNITS_PER_EPOCH = 4
#: How long (in the space's epochs) the last cut waits, its finalists ranked on the whole split. On the real
#: set the learning curves cross until then: in two 60-minute ASHA searches (docs/benchmarks.md) the whole-split
#: ranking after 150 steps put the winner 5th of 6 and 3rd of 5, after 300 steps first (of 5, and tied).
SETTLE_EPOCHS = 2
#: The least steps of a probe's unit (search.trainable.probe_trial).
PROBE_STEPS = 10
MIN_UNIT_TRAIN_S = 10.0
#: Seconds Ray takes to start (or restart) a trial's process, beyond what the probe times (measured: ~3 s
#: between one trial's last report and the next one's start on the slot), and to take a report and its checkpoint.
TRIAL_START_S = 5.0
REPORT_S = 1.0
#: Trials stop training this long before the deadline, to validate, report and hand in their checkpoint.
DEADLINE_MARGIN_S = 20.0


def slots(args, ray) -> int:
    """How many trials run at once: what the cluster holds, at most --max-concurrent."""
    total = ray.cluster_resources()
    fit = int(total.get("CPU", 0) // args.cpus_per_trial)
    if args.gpus_per_trial:
        fit = min(fit, int(total.get("GPU", 0) // args.gpus_per_trial))
    return max(1, min(fit, args.max_concurrent or fit))


def sampled_params(space: dict, seed: int) -> dict:
    """One draw of a search space (Tune's distributions sampled, constants kept)."""
    import numpy as np
    from ray.tune.search.sample import Domain

    rng = np.random.default_rng(seed)
    return {key: value.sample(random_state=rng) if isinstance(value, Domain) else value for key, value in space.items()}


def plan_search(args, ray, train, val, space: dict, deadline: float, groups: dict):
    """(HalvingPlan, HalvingTrial, the probes' timings: the longest of each)
    for a halving search: the validation subset; steps, validations and
    start-up timed by one probe trial per slot, all at once (as the trials
    will run; search.trainable.probe_trial); units of a quarter of the
    space's epoch, or longer where validation would outweigh training; the
    last cut after SETTLE_EPOCHS of the space's epochs, on the whole split,
    costed from the subset's validation, by pixels. deadline:
    time.monotonic() when the budget ends. PlanError when the budget is too small."""
    import math

    from nucjax.train.film import FILM_IMAGES
    from search.halving import HalvingTrial, plan_halving, validation_subset
    from search.spaces import contender, distinct_points
    from search.trainable import affordable, probe_trial, trial_environment

    subset = validation_subset([groups[s.image_id] for s in val], max(SUBSET_IMAGES, FILM_IMAGES), FILM_IMAGES)
    epoch_steps = int(space.get("steps_per_epoch", 100))
    least_steps = args.rung_steps or max(10, epoch_steps // UNITS_PER_EPOCH)
    # The probe's units are shorter than the trials': it times steps, not what they learn.
    probe_steps = max(PROBE_STEPS, least_steps // 3)
    probe = ray.remote(probe_trial).options(num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial)
    environment = trial_environment(args.cpus_per_trial, args.gpus_per_trial)
    count = slots(args, ray)
    # Every slot times the contender (nucjax.train's defaults), as all slots will run: every configuration's
    # unit is the contender's unit of work (HalvingTrial.unit_steps), so it takes about as long.
    timed = ray.get([probe.remote({**sampled_params(space, args.seed), **contender(space), "seed": args.seed, "warmup_steps": 1},
                                  train, val, subset, probe_steps, environment, groups, example_cache()) for _ in range(count)])
    probed = {key: max(t[key] for t in timed) for key in timed[0]}
    # A trial's start as the shared cache makes it: the probes paid the cold compilations (on this 2-core
    # machine, 49 of a 70 s start; the 60-minute search's trials then started in 3-20 s).
    step_s, subset_s, predicted_s, start_s = (probed[key] for key in ("step", "subset", "predicted_subset", "restart"))
    pixels = [s.image.shape[0] * s.image.shape[1] for s in val]
    full_s = predicted_s * sum(pixels) / sum(pixels[i] for i in subset)
    unit_steps = args.rung_steps or max(least_steps, math.ceil(max(MIN_UNIT_TRAIN_S, 2 * subset_s) / step_s))
    settle_units = max(1, round(SETTLE_EPOCHS * epoch_steps / unit_steps))
    # Only the configurations a unit can train are drawn (make_tuner), and no more start than there are.
    unet = space.get("model") != "simple"
    distinct = distinct_points(space, affordable(space, unit_steps)) if unet else None
    plan = plan_halving(deadline - time.monotonic(), count, unit_steps, unit_steps * step_s + subset_s + REPORT_S,
                        start_s + TRIAL_START_S, spent_s=time.monotonic() - args.started, subset_s=subset_s, full_s=full_s,
                        settle_units=settle_units, most_configs=distinct)
    # Trials stop a little before Tune's deadline, so their last validation and report land.
    wall_deadline = time.time() + deadline - time.monotonic() - DEADLINE_MARGIN_S
    return plan, HalvingTrial.of(plan, subset, wall_deadline, plan.unit_steps * probed["step_cost"]), {
        **probed, "affordable_configurations": distinct}


def resumed_halving(folder: Path, recorded: dict):
    """(HalvingPlan, HalvingTrial) of an interrupted halving search: its
    plan and subset, and what was left of its budget when it stopped (its
    halving record's last write) as the new deadline."""
    from search.halving import HALVING_FILE, HalvingTrial, read_plan

    halving = recorded["halving"]
    plan = read_plan(halving["plan"])
    last_decision = (folder / HALVING_FILE).stat().st_mtime if (folder / HALVING_FILE).is_file() else time.time()
    left = recorded["time_budget_min"] * 60 - (last_decision - recorded.get("started_at", last_decision))
    return plan, HalvingTrial.of(plan, halving["subset"], time.time() + max(left, 0.0) - DEADLINE_MARGIN_S,
                                 halving.get("unit_cost", 0.0))


def example_cache() -> str:
    """Where trials keep their prepared training examples (nucjax.inputs.cached_training_examples)."""
    from nucjax.cli import cache_root

    return str(cache_root().absolute() / "examples")


def make_tuner(args, storage: str, smoke: bool, train, val, space: dict, halving=None, groups: dict | None = None):
    """The Tuner of a search: ASHA, or with halving ((HalvingPlan,
    HalvingTrial), see plan_search) successive halving with paused trials."""
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from search.scheduler import HalvingScheduler
    from search.spaces import first_configurations
    from search.trainable import RANK_SCORE, affordable, run_trial, trial_environment

    environment = trial_environment(args.cpus_per_trial, args.gpus_per_trial)
    # The split travels in every trial's config, so nucjax.predict --split val finds the trial's validation images.
    space = {"seed": args.seed, **space, "split": args.split, "val_fraction": args.val_fraction,
             "test_fraction": args.test_fraction}
    plan, trial = halving if halving is not None else (None, None)
    if plan is not None:
        # Every configuration's schedule is planned for a survivor's units; the
        # warm-up ends within the first rung, so its scores say something.
        space = {**space, "steps_per_epoch": plan.unit_steps, "epochs": plan.total_units,
                 "warmup_steps": max(1, plan.unit_steps // 2)}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, train=train, val=val, environment=environment, halving=trial, groups=groups,
                             example_cache=example_cache()),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial},
    )
    parent, name = storage.rstrip("/").rsplit("/", 1)
    # TensorBoard events in every trial folder; the report refreshed where the experiment is a local folder.
    callbacks = [TBXLoggerCallback()] + ([make_report_refresh(Path(storage))] if "://" not in storage else [])
    run_config = tune.RunConfig(
        name=name,
        storage_path=parent,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=args.keep_checkpoints, checkpoint_score_attribute=RANK_SCORE,
                                                 checkpoint_score_order="max"),
        verbose=args.verbose,
    )
    if args.resume:
        return tune.Tuner.restore(storage, trainable=trainable, resume_errored=True)
    max_epochs = args.max_epochs or int(space.get("epochs", 1))
    if plan is not None:
        scheduler = HalvingScheduler(plan, Path(storage) if "://" not in storage else None)
    else:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(max_epochs, 1),
                                  grace_period=min(args.grace_period, max(max_epochs, 1)), reduction_factor=2)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    samples = plan.rungs[0].configs if plan is not None else args.samples or (4 if smoke else 6)
    # nucjax.train's defaults first, then distinct draws (the same for the same --seed): a search can lose
    # to plain training only through noise.
    unet = space.get("model") != "simple"
    points = first_configurations(space, samples, args.seed,
                                  affordable(space, plan.unit_steps) if plan is not None else None) if unet else None
    search_alg = BasicVariantGenerator(points_to_evaluate=points, random_state=args.seed)
    if args.search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            from nucjax.cli import fail

            fail("--search optuna needs optuna: pip install optuna")
        search_alg = OptunaSearch(points_to_evaluate=points[:1] if points else None)
    if args.max_epochs and plan is None:
        space = {**space, "epochs": args.max_epochs}
    tune_config = tune.TuneConfig(
        metric="score", mode="max", scheduler=scheduler, search_alg=search_alg,
        num_samples=samples,
        max_concurrent_trials=None if plan is not None else args.max_concurrent,  # the scheduler keeps to its slots
        time_budget_s=remaining_s(args) if args.time_budget else None,
        trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def parameter_keys() -> list[str]:
    """The flat trial keys, for results.csv's parameter columns."""
    from nucjax.config import DERIVED, flat_keys

    return sorted(set(flat_keys()) | set(DERIVED))


def trial_rows(results, fates: dict | None = None, cpus_per_trial: float = 1.0) -> list[dict]:
    """One row per trial, ranked by score: its kept checkpoint chosen as
    nucjax.train chooses (chosen_checkpoint), or its best epoch; scores on
    the whole validation split first (a halving search's early rungs score
    a subset, not comparable). fates: a halving search's, by trial id."""
    from search.trainable import RANK_SCORE

    rows = []
    histories = [r.metrics_dataframe for r in results]
    counts = [h["validated_images"].max() for h in histories
              if h is not None and not h.empty and "validated_images" in h]
    whole = max(counts) if counts else None
    for result, history in zip(results, histories):
        if history is None or history.empty or "score" not in history:
            rows.append({"trial": _trial_id(result), "score": float("nan"), "error": str(result.error or "no report")})
            continue
        on_whole = history[history["validated_images"] == whole] if whole is not None else history
        best = (on_whole if not on_whole.empty else history).loc[lambda h: h["score"].idxmax()]
        ranked_by = RANK_SCORE if RANK_SCORE in history else "score"  # older searches reported no rank_score
        checkpoint = result.get_best_checkpoint(ranked_by, "max") if result.best_checkpoints else result.checkpoint
        checkpoint = checkpoint.path if checkpoint is not None else ""
        chosen = chosen_checkpoint(result, whole)
        if chosen is not None and "epoch" in history and (history["epoch"] == chosen.epoch).any():
            # As nucjax.train chooses: the latest unless an earlier one is better beyond the noise.
            best, checkpoint = history[history["epoch"] == chosen.epoch].iloc[-1], str(chosen.path)
        row = {
            "trial": _trial_id(result),
            "score": float(best["score"]),
            "epoch": int(best.get("epoch", best.get("training_iteration", 0))),
            # The epoch reached: a halving survivor reports only the epochs it validates.
            "epochs_run": int(history["epoch"].max() if "epoch" in history else history["training_iteration"].max()),
            "calibrated": best.get("calibrated", ""),
            "checkpoint": checkpoint,
            "node": best.get("node", ""),
            "error": str(result.error) if result.error else "",
            "validated": "all" if whole is None or not on_whole.empty else f"subset of {int(best['validated_images'])}",
            "core_seconds": round(float(history["time_total_s"].max()) * cpus_per_trial, 1),
            # What a configuration costs: equal-time units give a slower one fewer steps (HalvingTrial.unit_steps).
            "images_per_s": _rounded(best.get("images_per_s"), 1),
            "unit_steps": _rounded(best.get("unit_steps"), 0),
        }
        if fates is not None:
            row["fate"] = fates.get(_trial_id(result).removeprefix("trial_"), "")
        row.update({key: value for key, value in result.config.items() if key in parameter_keys()})
        rows.append(row)
    rows.sort(key=lambda r: (r.get("validated", "all") != "all", -r["score"] if r["score"] == r["score"] else float("inf")))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def _rounded(value, digits: int):
    """A reported number rounded (an int for 0 digits), or '' where a trial did not report it."""
    if value is None or value != value:
        return ""
    return int(round(float(value))) if digits == 0 else round(float(value), digits)


def chosen_checkpoint(result, whole: int | None):
    """The trial's checkpoint by nucjax.train's rule (choose_checkpoint: the
    latest, unless an earlier one scores better beyond the noise) among
    those it kept that scored `whole` validation images; None without any."""
    from nucjax.checkpoints import CheckpointError, choose_checkpoint, read_checkpoint

    found = []
    for checkpoint, metrics in result.best_checkpoints or ():
        if whole is None or metrics.get("validated_images") == whole:
            try:
                found.append(read_checkpoint(Path(checkpoint.path)))
            except CheckpointError:
                continue
    return choose_checkpoint(sorted(found, key=lambda info: info.epoch)) if found else None


def _trial_id(result) -> str:
    return Path(result.path).name


def write_score_plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        history = result.metrics_dataframe
        if history is not None and not history.empty and "score" in history:
            ax.plot(history["training_iteration"], history["score"], marker="o", label=_trial_id(result))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Kaggle score")
    ax.set_title("Validation score per epoch, every trial")
    if len(ax.lines) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def search_share(args) -> float:
    """The share of --time-budget the search itself has: the rest is the refit's, when it has folds."""
    from search.refit import REFIT_SHARE

    return 1 - REFIT_SHARE if getattr(args, "folds", 0) else 1.0


def remaining_s(args) -> float:
    """Seconds left of the search's share of --time-budget, counted from the command's start."""
    return args.time_budget * 60 * search_share(args) - (time.monotonic() - args.started)


def scheduler_name(args) -> str:
    """--scheduler, 'auto' resolved: halving when there is a budget to plan from and models to train."""
    if args.scheduler != "auto":
        return args.scheduler
    return "halving" if args.time_budget and args.space != "simple" else "asha"


def run_search(args, storage: str, smoke: bool, data) -> str:
    """Run (or resume) the search on data (load_split's), then its refit
    when args.folds (search.refit); or, with args.refit, only the refit.
    Returns the summary to print."""
    import ray

    from nucjax.cli import fail
    from search.halving import HALVING_FILE, PlanError, fates, plan_record, read_halving
    from nucjax.config import ExperimentConfig, to_params
    from search.refit import REFIT_SHARE, RefitError, fold_params, refit, target_fold_params, target_params
    from search.spaces import search_space
    from search.trainable import MIN_UNIT_STEPS

    from nucjax.data.split import run_groups

    root, train, val, test = data
    everything = [*train, *val, *test]
    # Once here, not in every trial: the groups validation reports by (and the subset covers).
    groups = run_groups(train, val)
    space = search_space(args.space, smoke, gpu=args.gpus_per_trial > 0)
    local = Path(storage) if "://" not in storage else None
    how = {"train_images": len(train), "time_budget_min": args.time_budget, "started_at": time.time() - (time.monotonic() - args.started), "grace_period": args.grace_period,
           "max_epochs": args.max_epochs or int(space.get("epochs", 1)), "cpus_per_trial": args.cpus_per_trial,
           "gpus_per_trial": args.gpus_per_trial, "scheduler": scheduler_name(args), "folds_planned": args.folds,
           "refit_share": REFIT_SHARE if args.folds and args.time_budget else None}

    def refit_only(params: dict, source: str) -> str:
        # No search: the refit is the experiment, and has the whole budget.
        if local is None:
            fail("a refit writes its experiment to a local --storage folder")
        experiment = Experiment(local, root, args.space, SEARCH_SMOKE if smoke else None, args.split, args.val_fraction,
                                args.test_fraction, args.seed, None, tuple(s.image_id for s in test),
                                search={**how, "scheduler": "refit", "refit": source, "refit_share": 1.0 if args.time_budget else None})
        experiment.write()
        seconds = args.time_budget * 60 - (time.monotonic() - args.started) if args.time_budget else None
        params = target_fold_params(params, args, args.folds, int(space.get("steps_per_epoch", 100)), seconds is not None)
        _, lines = refit(args, ray, experiment, everything, params, args.folds, seconds, source)
        return f"experiment: {storage}\n{lines}"

    if args.refit is not None:
        try:
            params = target_params(args.refit)
        except RefitError as err:
            fail(str(err))
        return refit_only(params, str(args.refit))
    halving = None
    if args.resume and local is not None:
        recorded = read_experiment(local).search
        how = {**recorded, **{k: how[k] for k in ("train_images",)}}
        if recorded.get("halving"):
            halving = resumed_halving(local, recorded)
            print(f"resuming successive halving with {max(halving[1].deadline - time.time(), 0) / 60:.1f} minutes of "
                  "its budget left", flush=True)
    elif how["scheduler"] == "halving":
        print("timing one trial to plan the rungs", flush=True)
        try:
            plan, trial, probed = plan_search(args, ray, train, val, space, time.monotonic() + remaining_s(args), groups)
        except PlanError as err:
            if not (args.folds and args.scheduler == "auto"):
                fail(str(err))
            # Half the budget holds no halving plan (on two cores: under about 100 minutes): the refit is worth more
            # than a search cut short, so it takes the whole budget, with the configuration nucjax.train would use.
            print(f"{err}\nno search beside the refit: refitting nucjax.train's defaults on {args.folds} folds", flush=True)
            return refit_only(to_params(ExperimentConfig()), "nucjax.train's defaults (the budget held no search beside the refit)")
        halving = plan, trial
        # Ray's start, the data and the probes: machine time no trial's result comes from (the caches they
        # fill, compiled programs and prepared examples, the trials do use).
        how["halving"] = {"plan": plan_record(plan), "subset": list(trial.subset), "subset_until": trial.subset_until,
                          "unit_cost": trial.unit_cost,
                          "setup_seconds": time.monotonic() - args.started, "probe": probed}
        if probed["affordable_configurations"] is not None:
            print(f"{probed['affordable_configurations']} distinct configurations of the space train at least "
                  f"{MIN_UNIT_STEPS} steps per unit; others are not drawn", flush=True)
        print(plan.describe(), flush=True)
    experiment = Experiment(Path(local or "."), root, args.space, SEARCH_SMOKE if smoke else None, args.split,
                            args.val_fraction, args.test_fraction, args.seed,
                            tuple(s.image_id for s in val), tuple(s.image_id for s in test), search=how)
    if local is not None and not args.resume:
        experiment.write()
        (local / HALVING_FILE).unlink(missing_ok=True)  # a new search in an old folder: its scheduler starts afresh
    print(f"searching '{args.space}' on {len(train)} training and {len(val)} validation images from {root}", flush=True)
    tuner = make_tuner(args, storage, smoke, train, val, space, halving, groups)
    results = tuner.fit()
    record = read_halving(local) if local is not None else None
    rows = trial_rows(results, fates(record) if record else None, args.cpus_per_trial)
    if local is None:
        skipped = f"\nno refit: its folds are written to a local --storage folder (run --refit there)" if args.folds else ""
        return _summary(rows, storage) + skipped
    experiment.write_results(rows, parameter_keys())
    write_score_plot(results, local / "scores.png")
    folds = ""
    winner = next((r for r in results if rows and _trial_id(r) == rows[0]["trial"]), None)
    if args.folds and winner is not None and rows[0]["score"] == rows[0]["score"]:
        from nucjax.checkpoints import read_checkpoint

        seconds = args.time_budget * 60 - (time.monotonic() - args.started) if args.time_budget else None
        # To the budget when there is one; else as long as the winner's chosen checkpoint trained.
        steps = None if seconds else read_checkpoint(Path(rows[0]["checkpoint"])).step
        params = fold_params(winner.config, args, args.folds, int(space.get("steps_per_epoch", 100)), steps)
        _, folds = refit(args, ray, read_experiment(local), everything, params, args.folds, seconds,
                         f"the search's winner {rows[0]['trial']}")
        folds = "\n" + folds
    from search.report import write_report

    report = write_report(local)
    return (_summary(rows, storage) + f"\nreport: {report} (open it in a browser; tensorboard --logdir {storage})"
            + folds)


def _summary(rows: list[dict], storage: str) -> str:
    done = [r for r in rows if r["score"] == r["score"]]
    lines = [f"experiment: {storage} ({len(rows)} trials, {len(done)} reported; results.csv, scores.png)"]
    if not done:
        return "\n".join(lines + ["no trial reported a score; see the errors in results.csv"])
    best = done[0]
    lines.append(f"best trial: {best['trial']}  validation Kaggle score {best['score']:.4f} (epoch {best.get('epoch', 1)})")
    if best.get("checkpoint"):
        lines.append(f"best checkpoint: {best['checkpoint']}")
        lines.append(f"submission: python -m nucjax.predict --checkpoint {best['checkpoint']} --data DIR --out submission.csv")
    lines.append(f"ensemble: python -m ensemble.predict --experiment {storage} --data DIR --out submission.csv")
    return "\n".join(lines)
