"""python -m ensemble.predict: combine several checkpoints into one Kaggle submission.

Members: a search experiment's fold models (when it was refit on folds),
else its --top-k best trials, one trial's epochs (--epochs-of) or
--checkpoints. Their maps are combined (--combine intersect, vote or mean)
and post-processed once, or each member's nuclei are fused (--combine
nuclei), calibrated on validation. With no arguments: the
latest experiment under ./runs, on the test images it held back, into
./submission.csv. --compare scores every member and combination.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from nucjax.cli import add_prediction_arguments, checked_backend, checked_scale, checked_scales, data_command_parser, fail


USAGE = "python -m ensemble.predict [--experiment DIR] [--data DIR] [--out CSV] [--compare] [options]"


def parse_args(argv=None):
    from ensemble.selection import EnsembleConfig
    from nucjax.combine import COMBINATIONS

    parser = data_command_parser("ensemble.predict", __doc__, data_help="images to predict (the experiment's test images)",
                                 usage=USAGE)
    members = parser.add_argument_group("members")
    members.add_argument("--experiment", type=Path, metavar="DIR", help="a search experiment (the latest under ./runs)")
    members.add_argument("--top-k", type=int, metavar="K", help="best trials instead of fold models (3 without folds)")
    members.add_argument("--epochs-of", metavar="TRIAL", help="every checkpoint one trial kept ('best': the best's)")
    members.add_argument("--checkpoints", type=Path, nargs="+", metavar="DIR", help="these checkpoints or training runs")
    combining = parser.add_argument_group("combining")
    combining.add_argument("--combine", choices=COMBINATIONS, default=EnsembleConfig.combine,
                           metavar="HOW", help=f"{', '.join(COMBINATIONS)} (%(default)s)")
    combining.add_argument("--quorum", type=int, metavar="N", help="intersect (all), nuclei (a majority): members that must agree")
    combining.add_argument("--select", choices=("greedy", "all"), default=EnsembleConfig.select, metavar="HOW",
                           help="greedy (keep what raises validation) or all (%(default)s)")
    combining.add_argument("--calibration", type=Path, metavar="DIR", help="labelled folder to calibrate on (validation)")
    combining.add_argument("--no-calibrate", action="store_true", help="keep the best member's post-processing")
    combining.add_argument("--compare", action="store_true", help="score every member and combination (table, plot)")
    add_prediction_arguments(parser)
    args = parser.parse_args(argv)
    args.scale = checked_scale(parser, args.scale)
    args.scales = checked_scales(parser, args.scales)
    checked_backend(parser, args.backend)
    if args.top_k is not None and args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.quorum is not None and args.combine not in ("intersect", "nuclei") and not args.compare:
        parser.error("--quorum goes with --combine intersect or nuclei")
    if args.quorum is not None and args.quorum < 1:
        parser.error("--quorum must be at least 1")
    args.ensemble = EnsembleConfig(args.combine, args.quorum, args.select, args.compare)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    from nucjax.data import DataError
    from nucjax.experiment import ExperimentError
    from nucjax.checkpoints import CheckpointError

    try:
        run(args)
    except (ExperimentError, CheckpointError, DataError) as err:
        fail(str(err))


def run(args) -> None:
    from ensemble.images import calibration_samples
    from ensemble.members import candidate_checkpoints
    from ensemble.report import counted, describe
    from ensemble.selection import ensemble_plans
    from nucjax.cli import cache_root, progress, warn
    from nucjax.experiment import ExperimentError, latest_experiment, read_experiment
    from nucjax.segmenter import load_model

    experiment = None
    if args.experiment or not args.checkpoints:
        experiment = read_experiment(args.experiment or latest_experiment(Path("runs")))
    if experiment is not None and experiment.folds and args.top_k is None and not (args.epochs_of or args.checkpoints):
        return run_folds(args, experiment)
    models = [load_model(p, args.backend) for p in candidate_checkpoints(experiment, args.top_k or 3, args.epochs_of, args.checkpoints)]
    if args.quorum is not None and args.quorum > len(models):
        raise ExperimentError(f"--quorum {args.quorum} needs at least {args.quorum} members; there are {len(models)} candidates")
    print(f"{counted(len(models), 'candidate member')}: " + ", ".join(f"{m.name} ({m.score:.4f})" for m in models), file=sys.stderr)

    calibration = []
    if not args.no_calibrate:
        folder = args.calibration or (args.data if experiment is None else None)
        calibration, skipped = calibration_samples(models, experiment, folder, cache_root(), args.strict)
        for entry in skipped if folder != args.data else []:  # the prediction loop warns about --data's own files
            warn(str(entry))
        if not calibration:
            warn("no labelled validation images to re-calibrate on; using the best member's settings")
    candidates, plans, log = ensemble_plans(models, calibration, args.ensemble, {"scale": args.scale, "tta": args.tta, "scale_by": args.scale_by,
                                                                            "scales": args.scales or (1.0,)},
                                            lambda items, description: progress(items, len(items), description))
    if log:
        print("greedy selection on validation:\n  " + "\n  ".join(log), file=sys.stderr)
    for plan in plans if calibration else []:
        print(f"{plan.name}: validation {plan.score:.4f} with {describe(plan.segmenter.postprocess)}", file=sys.stderr)
    chosen = plans[0]
    print(f"{counted(len(chosen.members), 'member')}, {args.combine}{' with TTA' if args.tta else ''}: "
          + ", ".join(m.name for m in chosen.segmenter.models), file=sys.stderr)
    if experiment is not None and calibration and args.checkpoints is None:
        segmenter = chosen.segmenter
        experiment.write_ensemble([m.path for m in segmenter.models], segmenter.combine, segmenter.quorum, asdict(segmenter.postprocess),
                                  segmenter.scales)

    compared = experiment.folder if experiment is not None and args.checkpoints is None else None
    predict_plans(args, experiment, models, candidates, plans, compared)


def predict_plans(args, experiment, models, candidates, plans, compared) -> None:
    """Predict --data (else the experiment's held-back test images) with the
    first plan, scoring every plan and member with --compare (its table kept
    in `compared`, the experiment folder, when given)."""
    from ensemble.images import prediction_sources
    from ensemble.report import write_comparison
    from ensemble.selection import plans_segment
    from nucjax.cli import cache_root, checked_sources, planned_for, predict_folder

    sources = checked_sources(*prediction_sources(args.data, experiment, cache_root()), args.strict)
    if args.data is None:
        print(f"predicting the {len(sources)} test images the search held back", file=sys.stderr)
    compare = (lambda scores, ids: write_comparison(args.out, models, plans, scores, ids, compared)) if args.compare else None
    predict_folder(plans_segment(planned_for(candidates, sources), plans, args.compare), sources, args, report=compare)


def run_folds(args, experiment) -> None:
    """The fold models of a refit, as one ensemble: post-processing calibrated
    on their pooled out-of-fold maps (the refit's, at the multi-scale factors
    it chose, or made again here when the scale, TTA or --scales differ from
    what it calibrated with), then predicted as run() does."""
    from dataclasses import replace

    from ensemble.images import experiment_data
    from ensemble.report import counted, describe
    from ensemble.selection import fold_plans
    from nucjax.cli import cache_root, progress
    from nucjax.data import load_dataset
    from nucjax.folds import fold_ensemble
    from nucjax.postprocess import PostprocessConfig
    from nucjax.segmenter import load_model, scales_text

    models = [load_model(p, args.backend) for p in experiment.fold_checkpoints()]
    print(f"{counted(len(models), 'fold model')}: " + ", ".join(f"{m.name} ({m.score:.4f})" for m in models), file=sys.stderr)
    refit = experiment.folds.get("ensemble") or {}
    refit_scales = tuple(refit.get("scales") or (1.0,))
    options = {"scale": args.scale, "tta": args.tta, "scale_by": args.scale_by, "scales": args.scales or refit_scales}
    stored = refit.get("postprocess")
    if stored and not args.tta and args.scale == "model" and args.scale_by == "acquisition" and options["scales"] == refit_scales:
        postprocess = PostprocessConfig(**stored)
    elif args.no_calibrate:
        postprocess = None
    else:
        samples = load_dataset(experiment_data(experiment, cache_root()), labelled=True, strict=args.strict).samples
        found = fold_ensemble(models, samples, options, lambda items, description: progress(items, len(items), description))
        print(f"pooled out-of-fold calibration over {len(found.image_ids)} images: {found.score:.4f}", file=sys.stderr)
        postprocess = found.postprocess
    candidates, plans = fold_plans(models, postprocess, replace(args.ensemble, select="all"), options)
    multi = f" at scales {scales_text(options['scales'])}" if len(options["scales"]) > 1 else ""
    print(f"fold ensemble, {args.combine}{' with TTA' if args.tta else ''}{multi}, {describe(candidates.postprocess)}", file=sys.stderr)
    chosen = plans[0].segmenter
    experiment.write_ensemble([m.path for m in chosen.models], chosen.combine, chosen.quorum, asdict(chosen.postprocess),
                              chosen.scales)
    predict_plans(args, experiment, models, candidates, plans, experiment.folder)


if __name__ == "__main__":
    main()
