"""python -m search.run: search U-Nets (or the simple model) as Ray Tune trials.

Trains configurations of a space (crop size, width, depth, model, nucleus
scale; nucjax.train's defaults always among them) as Ray Tune trials on this
machine or a Ray cluster (--address). With --time-budget, successive halving
gives the budget to the best, then the winner is refit on group folds; the
experiment folder holds results.csv, report.html and experiment.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nucjax.cli import DATA_HELP, help_formatter

USAGE = "python -m search.run [--space NAME] [--data DIR] [--time-budget MIN] [--folds K] [options]"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.run", usage=USAGE, description=__doc__.split("\n\n", 1)[1],
                                     epilog=DATA_HELP, formatter_class=help_formatter)
    parser.add_argument("--space", default="extended", metavar="NAME", help="standard, extended or simple (%(default)s)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="dataset folder (default: the synthetic set)")
    parser.add_argument("--time-budget", type=float, metavar="MIN", help="minutes for the whole experiment")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="refit the winner on K group folds, as the ensemble (5 with --time-budget; 0: none)")
    parser.add_argument("--refit", type=Path, metavar="PATH", help="no search: refit a trial, run, checkpoint or JSON config")
    parser.add_argument("--samples", type=int, metavar="N", help="configurations without a budget (6; synthetic: 4)")
    parser.add_argument("--scheduler", choices=("auto", "halving", "asha"), default="auto", metavar="NAME",
                        help="halving (with a budget), asha, or auto (%(default)s)")
    parser.add_argument("--rung-steps", type=int, metavar="N", help="halving: steps between reports")
    parser.add_argument("--grace-period", type=int, default=3, metavar="N", help="asha: epochs before a stop (%(default)s)")
    parser.add_argument("--max-epochs", type=int, metavar="N", help="epochs of the longest trial (the space's)")
    parser.add_argument("--search", choices=("random", "optuna"), default="random", metavar="NAME",
                        help="random, or optuna when installed (%(default)s)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="(%(default)s)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N", help="fractions share a GPU (%(default)s)")
    parser.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (what the resources allow)")
    parser.add_argument("--address", type=str, metavar="ADDR", help="join a Ray cluster ('auto' on its head node)")
    parser.add_argument("--storage", type=str, metavar="DIR", help="experiment folder or cloud URI (runs/<space>-<time>)")
    parser.add_argument("--resume", action="store_true", help="resume the interrupted experiment in --storage")
    parser.add_argument("--max-failures", type=int, default=2, metavar="N", help="retries of a failed trial (%(default)s)")
    parser.add_argument("--keep-checkpoints", type=int, default=3, metavar="N", help="best checkpoints per trial (%(default)s)")
    parser.add_argument("--split", choices=("group", "stratified"), default="group", metavar="NAME",
                        help="group (whole experiments) or stratified (%(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.15, metavar="F", help="validation share (%(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.1, metavar="F", help="held-back test share (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="the split's and sampler's seed (%(default)s)")
    parser.add_argument("--strict", action="store_true", help="stop at the first skipped file instead of warning")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), metavar="N", help="Ray's own output, 0-2 (%(default)s)")
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
