"""python -m search.run: search U-Nets (or the simple model) as Ray Tune trials.

Runs on this machine, or across a Ray cluster (--address; `ray up
cluster.yaml` makes one). Each trial trains with nucjax, calibrates its
post-processing on the validation split every epoch and reports the
validation Kaggle score with a checkpoint; an ASHA scheduler stops poor
trials early. The experiment folder (default ./runs/<space>-<time>) holds
every trial's checkpoints, results.csv ranked by score, scores.png (score
per epoch of every trial) and experiment.json (what ensemble.predict needs).

Spaces: standard (the report's U-Net), extended (the multi-arm U-Net),
simple (the threshold model and post-processing, no training). Without
--data, a synthetic set is generated and a small search runs in minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nucjax.cli import DATA_HELP


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m search.run",
        description=__doc__.split("\n\n", 1)[1],
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--space", default="extended", help="standard, extended or simple (default: %(default)s)")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the synthetic set)")
    parser.add_argument("--samples", type=int, help="trials to run (default: 6 on real data, 4 on the synthetic set)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the resources allow)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="(default: %(default)s)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="fractions share a GPU; each trial's JAX then gets that share of its memory (default: %(default)s)")
    parser.add_argument("--time-budget", type=float, help="minutes for the whole search; trials still running then are stopped")
    parser.add_argument("--folds", type=int,
                        help="group k-fold refit: after the search, its winner is trained once per fold (every "
                             "acquisition group validated once, all at once as trials), scored out of fold, and the "
                             "fold models become the experiment's ensemble; 0: no refit (default: 5 with --time-budget, "
                             "else 0). The refit takes half the budget; where the other half holds no halving plan "
                             "(--scheduler auto), it takes all of it, refitting nucjax.train's defaults")
    parser.add_argument("--refit", type=Path, metavar="CONFIG_OR_TRIAL",
                        help="no search: refit this on --folds folds (a search trial's folder, a checkpoint, a "
                             "training run, or a JSON config)")
    parser.add_argument("--scheduler", choices=("auto", "halving", "asha"), default="auto",
                        help="halving: successive halving planned from --time-budget (a probe trial times a unit of "
                             "training; many configurations start, the best continue from their checkpoints, the "
                             "survivors train to the deadline); asha: Ray's ASHA, trials of --samples; auto (default): "
                             "halving when there is a --time-budget, else asha")
    parser.add_argument("--rung-steps", type=int, help="halving: training steps between reports (default: a quarter of the space's epoch)")
    parser.add_argument("--grace-period", type=int, default=3, help="epochs before ASHA may stop a trial (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, help="epochs of the longest trial (default: the space's)")
    parser.add_argument("--search", choices=("random", "optuna"), default="random",
                        help="random sampling, or Bayesian search with Optuna when installed (default: %(default)s)")
    parser.add_argument("--storage", type=str, help="experiment folder, or a cloud URI a multi-node cluster shares (default: ./runs/<space>-<time>)")
    parser.add_argument("--address", type=str, help="join a running Ray cluster ('auto' on its head node)")
    parser.add_argument("--resume", action="store_true", help="resume the interrupted experiment in --storage")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial, from its last checkpoint (default: %(default)s)")
    parser.add_argument("--keep-checkpoints", type=int, default=3,
                        help="best checkpoints kept per trial, for ensembles of epochs (default: %(default)s)")
    parser.add_argument("--split", choices=("group", "stratified"), default="group",
                        help="group: validation and test hold out whole experiments (acquisition groups); "
                             "stratified: a share of every image kind (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share of each image kind (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="held-back test share, for ensemble.predict (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="stop at the first skipped file instead of warning")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Ray's own output (default: %(default)s)")
    return parser.parse_args(argv)


def check_args(args) -> None:
    """Refuse what cannot work before any trial starts."""
    from nucjax.cli import fail
    from nucjax.experiment import EXPERIMENT_FILE, is_experiment
    from search.spaces import SPACES, check_space, search_space

    if args.space not in SPACES:
        fail(f"unknown search space '{args.space}'; choose one of {', '.join(SPACES)}")
    try:
        check_space(search_space(args.space, args.data is None, gpu=args.gpus_per_trial > 0))
    except ValueError as err:
        fail(f"search space '{args.space}': {err}")
    if args.data is not None and not args.data.is_dir():
        fail(f"--data {args.data}: no such folder")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        fail("--cpus-per-trial must be positive and --gpus-per-trial not negative")
    if args.keep_checkpoints < 1:
        fail("--keep-checkpoints must be at least 1")
    if args.scheduler == "halving" and not args.time_budget:
        fail("--scheduler halving plans from the time budget: give --time-budget MINUTES (or use --scheduler asha)")
    if args.scheduler == "halving" and args.space == "simple":
        fail("the simple space trains nothing to halve; use --scheduler asha")
    if args.rung_steps is not None and args.rung_steps < 1:
        fail("--rung-steps must be at least 1")
    if args.folds is not None and (args.folds == 1 or args.folds < 0):
        fail(f"--folds {args.folds}: k-fold needs at least 2 folds (0: no refit)")
    if args.refit is not None and not args.refit.exists():
        fail(f"--refit {args.refit}: no such trial, checkpoint, run or config file")
    if args.refit is not None and args.folds == 0:
        fail("--refit trains on folds: give --folds K (2 or more), or leave it out for 5")
    if args.refit is not None and args.resume:
        fail("--refit starts a new experiment; --resume continues a search")
    if (args.folds or args.refit) and args.split != "group":
        fail("--folds holds out acquisition groups: it needs --split group")
    if args.folds and args.space == "simple":
        fail("the simple space trains nothing to refit; use --folds 0")
    if args.resume and not args.storage:
        fail("--resume needs --storage, the folder of the interrupted experiment")
    if args.storage and "://" not in args.storage:
        folder = Path(args.storage).absolute()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            fail(f"--storage {args.storage}: cannot write there ({err.strerror})")
        if args.resume and not is_experiment(folder):
            fail(f"--storage {args.storage}: no experiment to resume (no {EXPERIMENT_FILE})")


def check_resources(args, ray) -> None:
    """Refuse a trial that no node of the cluster could ever hold."""
    from nucjax.cli import fail

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= args.cpus_per_trial
            and n["Resources"].get("GPU", 0) >= args.gpus_per_trial]
    if not fits:
        total = ray.cluster_resources()
        fail(f"no node can hold a trial of {args.cpus_per_trial:g} CPUs and {args.gpus_per_trial:g} GPUs "
             f"(the cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs); lower the request")


def resolve_folds(args) -> int:
    """--folds as given, else DEFAULT_FOLDS with a time budget or a refit target, else 0."""
    from search.refit import DEFAULT_FOLDS

    if args.folds is not None:
        return args.folds
    return DEFAULT_FOLDS if (args.time_budget or args.refit is not None) and args.space != "simple" else 0


def check_folds(args, samples) -> None:
    """Refuse more folds than the acquisition groups outside the test images can fill."""
    from nucjax.cli import fail
    from nucjax.data import split_samples

    try:
        split_samples(samples, args.val_fraction, args.test_fraction, args.seed, "group", args.folds, 0)
    except ValueError as err:
        fail(f"--folds {args.folds}: {err}")


def main(argv=None) -> None:
    args = parse_args(argv)
    args.started = time.monotonic()  # the time budget counts from here
    check_args(args)
    args.folds = resolve_folds(args)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    from search.tuner import load_split

    smoke = args.data is None
    # The data, and whether it has groups for the folds, before Ray starts: bad input starts nothing.
    data = load_split(args, smoke)
    if args.folds:
        check_folds(args, [s for part in data[1:] for s in part])
    # Ray starts before anything imports JAX.
    import ray

    from search.tuner import run_search

    storage = args.storage or str(Path("runs").absolute() / f"{args.space}-{time.strftime('%Y%m%d-%H%M%S')}")
    started = ray.is_initialized()
    if not started:
        ray.init(address=args.address, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=args.verbose > 1, configure_logging=True)
    try:
        check_resources(args, ray)
        summary = run_search(args, storage, smoke, data)
    finally:
        if not started:
            ray.shutdown()
    print(summary)


if __name__ == "__main__":
    sys.exit(main())
