"""python -m ensemble.predict: combine several checkpoints into one Kaggle submission.

Members: the --top-k best trials of a search experiment (default), every
epoch a trial kept (--epochs-of TRIAL, the report's epoch noise), or
explicit --checkpoints. Each member predicts every image in its own input
mode and size, optionally averaged over the 8 flips and rotations (--tta);
members run one after another. The maps are combined (--combine):
intersect (a pixel is a nucleus where every member, or --quorum of them,
says so: the reference report's proposal), vote (a majority) or mean (the
average probability). The shared post-processing runs once, its thresholds
re-calibrated for the combination on the experiment's validation split.

With no arguments: the latest experiment under ./runs, predicting the test
images that search held back (on the data it searched), into
./submission.csv. --compare scores every member and every combination on a
labelled set and writes a table and a bar plot beside --out.

bad input: no experiment, an unknown trial, a checkpoint from another
nucjax version or with a broken config stop with a message naming it. An
unreadable image is reported and gets an empty row; the rest are predicted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nucjax.cli import data_command_parser, fail

#: The defaults: what scored best in our own comparison (see the README).
DEFAULT_COMBINE = "mean"
DEFAULT_TOP_K = 3


def parse_args(argv=None):
    parser = data_command_parser("ensemble.predict", __doc__,
                                 data_help="folder of images to predict (default: the test images the experiment held back)")
    members = parser.add_argument_group("members")
    members.add_argument("--experiment", type=Path, help="a search experiment folder (default: the latest under ./runs)")
    members.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="best trials of the experiment (default: %(default)s)")
    members.add_argument("--epochs-of", metavar="TRIAL",
                         help="instead, every checkpoint one trial kept ('best': the best trial's)")
    members.add_argument("--checkpoints", type=Path, nargs="+", metavar="DIR",
                         help="instead, these checkpoint folders (or training run folders: their best checkpoint)")
    combining = parser.add_argument_group("combining")
    combining.add_argument("--combine", choices=("intersect", "vote", "mean"), default=DEFAULT_COMBINE,
                           help="how member maps become one (default: %(default)s)")
    combining.add_argument("--quorum", type=int, help="intersect: members that must agree on a pixel (default: all)")
    combining.add_argument("--select", choices=("greedy", "all"), default="greedy",
                           help="greedy: keep a candidate only when it raises the calibrated validation score, "
                                "best candidate first; all: every candidate (default: %(default)s)")
    combining.add_argument("--tta", action="store_true", help="average each member over the 8 flips and rotations")
    combining.add_argument("--calibration", type=Path, metavar="DIR",
                           help="labelled folder whose validation split re-calibrates the post-processing "
                                "(default: the experiment's validation split, else --data's when labelled)")
    combining.add_argument("--no-calibrate", action="store_true", help="keep the best member's post-processing settings")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", type=Path, default=Path("submission.csv"), help="submission CSV (default: %(default)s)")
    outputs.add_argument("--labels", type=Path, metavar="DIR", help="also write a 16-bit label PNG per image here")
    outputs.add_argument("--overlays", type=Path, metavar="DIR", help="also write each image with its nuclei outlined")
    outputs.add_argument("--solution", type=Path, metavar="CSV_OR_FOLDER",
                         help="score against this solution CSV or labelled folder (default: the images' own labels)")
    outputs.add_argument("--compare", action="store_true",
                         help="score every member and every combination; table and bar plot beside --out")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.quorum is not None and args.combine != "intersect" and not args.compare:
        parser.error("--quorum goes with --combine intersect")
    if args.quorum is not None and args.quorum < 1:
        parser.error("--quorum must be at least 1")
    return args


class Progress:
    """One stderr line: the phase, the image and the member being predicted."""

    def __init__(self, phase: str, images: int, members: int):
        self.phase, self.images, self.members = phase, images, members

    def show(self, image: int, member: int) -> None:
        print(f"\r{self.phase}: image {image}/{self.images}, member {member}/{self.members}   ", end="", file=sys.stderr)

    def done(self) -> None:
        print(file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import use_compilation_cache

    use_compilation_cache()
    from ensemble.members import MemberError
    from nucjax.data import DataError
    from nucjax.train.checkpoints import CheckpointError

    try:
        run(args)
    except (MemberError, CheckpointError, DataError) as err:
        fail(str(err))


def run(args) -> None:
    import numpy as np

    from ensemble.combine import COMBINATIONS
    from ensemble.images import calibration_samples
    from ensemble.members import MemberError, latest_experiment, read_experiment
    from ensemble.predictions import base_postprocess, load_member
    from nucjax.submission import write_submission

    experiment = None
    if args.experiment or not args.checkpoints:
        experiment = read_experiment(args.experiment or latest_experiment(Path("runs")))
    candidates = [load_member(p) for p in choose_members(args, experiment)]
    if args.quorum is not None and args.quorum > len(candidates):
        raise MemberError(f"--quorum {args.quorum} needs at least {args.quorum} members; there are {len(candidates)} candidates")
    print(f"{counted(len(candidates), 'candidate member')}: "
          + ", ".join(f"{m.name} ({m.score:.4f})" for m in candidates), file=sys.stderr)

    # Choose members and calibrate each combination on labelled validation maps.
    calibration = []
    if not args.no_calibrate:
        folder = args.calibration or (args.data if experiment is None else None)
        calibration, skipped = calibration_samples(candidates, experiment, folder)
        for entry in skipped:
            print(f"warning: {entry}", file=sys.stderr)
    if calibration:
        combinations = calibrated_combinations(args, candidates, calibration)
    else:
        if not args.no_calibrate:
            print("warning: no labelled validation images to re-calibrate on; using the best member's settings", file=sys.stderr)
        everyone, base = tuple(range(len(candidates))), base_postprocess(candidates)
        methods = [args.combine] + ([m for m in COMBINATIONS if m != args.combine] if args.compare else [])
        combinations = {(method, everyone): base for method in methods}
    (_, chosen), _ = next(iter(combinations.items()))  # the submission's
    members = [candidates[i] for i in chosen]
    print(f"{counted(len(members), 'member')}, {args.combine}{' with TTA' if args.tta else ''}: "
          + ", ".join(m.name for m in members), file=sys.stderr)

    # With --compare every candidate predicts; otherwise the chosen members only.
    predicting = candidates if args.compare else members
    position = {c: p for p, c in enumerate(range(len(candidates)) if args.compare else chosen)}
    plans = {name_of(method, group, len(candidates)): (method, [position[i] for i in group], config)
             for (method, group), config in combinations.items()}
    predictions, scores = predict_all(args, experiment, predicting, plans)
    rows = write_submission(args.out, predictions)
    print(f"wrote {args.out}: {len(predictions)} images, {rows} rows ({args.combine} of {counted(len(members), 'member')}"
          f"{', TTA' if args.tta else ''})")
    main_plan = next(iter(plans))
    scored = len(scores.get(main_plan, []))
    if args.compare:
        write_comparison(args, candidates, plans, scores)
    if scored:
        missing = len(predictions) - scored
        note = f" ({missing} images without truth left out)" if missing else ""
        print(f"Kaggle score: {float(np.mean(scores[main_plan])):.4f}{note}")


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def name_of(method: str, group: tuple, candidates: int) -> str:
    return f"{method} of {len(group)}" + (" (all)" if len(group) == candidates and candidates > 1 else "")


def calibrated_combinations(args, candidates, calibration) -> dict:
    """{(method, member indices): calibrated post-processing}, the one to submit first.

    --select greedy chooses the members for --combine; --compare adds the
    other combinations of the same members, and every combination of all
    the candidates when the selection left some out.
    """
    import numpy as np

    from ensemble.combine import COMBINATIONS, group_quorum
    from ensemble.predictions import base_postprocess, calibrate_combination, greedy_selection, members_maps

    progress = Progress("validation maps", len(calibration), len(candidates))
    maps = []
    for i, sample in enumerate(calibration, start=1):
        per_member = members_maps(candidates, sample.image, args.tta, lambda j: progress.show(i, j))
        maps.append([m.astype(np.float16) for m in per_member])  # half the memory; calibration casts back
    progress.done()
    truths = [s.labels for s in calibration]
    everyone = tuple(range(len(candidates)))
    base = base_postprocess(candidates)
    combinations = {}
    if args.select == "greedy" and len(candidates) > 1:
        chosen, config, score, log = greedy_selection(maps, truths, candidates, args.combine, args.quorum, base)
        print("greedy selection on validation:\n  " + "\n  ".join(log), file=sys.stderr)
        chosen = tuple(chosen)
        combinations[(args.combine, chosen)] = config
    else:
        chosen = everyone
    wanted = [(args.combine, chosen)]
    if args.compare:
        groups = [chosen] + ([everyone] if chosen != everyone else [])
        wanted += [(method, group) for group in groups for method in COMBINATIONS if (method, group) not in wanted]
    for method, group in wanted:
        if (method, group) in combinations:
            continue
        group_maps = [[m[i] for i in group] for m in maps]
        combinations[(method, group)], score = calibrate_combination(
            group_maps, truths, [candidates[i] for i in group], method, group_quorum(args.quorum, len(group)),
            base_postprocess([candidates[i] for i in group]))
        print(f"{name_of(method, group, len(candidates))}: validation {score:.4f} with {describe(combinations[(method, group)])}",
              file=sys.stderr)
    return combinations


def predict_all(args, experiment, members, plans) -> tuple[list, dict]:
    """Predict every image with every member, then each plan
    {name: (method, member positions, post-processing)}; the first plan's
    labels are the submission. Returns (predictions, scores by plan or
    member name) where scores are per labelled image."""
    import numpy as np

    from ensemble.combine import combine, group_quorum
    from ensemble.images import prediction_sources
    from ensemble.predictions import members_maps
    from nucjax.data import DataError
    from nucjax.data.kaggle import load_sample, write_label_png
    from nucjax.metrics import image_score
    from nucjax.pictures import contour_overlay, write_overlay
    from nucjax.postprocess import instances
    from nucjax.score import read_truth

    sources, skipped = prediction_sources(args.data, experiment)
    if args.strict and skipped:
        raise DataError(f"{skipped[0]} (strict mode: fix or remove it)")
    for entry in skipped:
        print(f"warning: {entry}", file=sys.stderr)
    if args.data is None:
        print(f"predicting the {len(sources)} test images the search held back", file=sys.stderr)
    truth_by_id = read_truth(args.solution) if args.solution else {}
    progress = Progress("predicting", len(sources), len(members))
    predictions, scores = [], {}
    started, forward_seconds = time.perf_counter(), 0.0
    for i, source in enumerate(sources, start=1):
        try:
            sample = load_sample(source, labelled=None)[0]
        except DataError as err:
            print(f"\nwarning: {err}: written as an empty prediction", file=sys.stderr)
            predictions.append((source.image_id, np.zeros((1, 1), np.int32)))
            continue
        tick = time.perf_counter()
        per_member = members_maps(members, sample.image, args.tta, lambda j: progress.show(i, j))
        forward_seconds += time.perf_counter() - tick
        outcomes = {}
        for name, (method, positions, config) in plans.items():
            group = [members[p] for p in positions]
            combined = combine([per_member[p] for p in positions], [m.threshold for m in group], method,
                               group_quorum(args.quorum, len(group)))
            outcomes[name] = instances(combined, config, sample.image)
        labels = next(iter(outcomes.values()))
        predictions.append((sample.image_id, labels))
        truth = truth_by_id.get(sample.image_id, sample.labels)
        if truth is not None:
            if args.compare:
                for member, maps in zip(members, per_member):
                    outcomes[member.name] = instances(maps, member.config.postprocess, sample.image)
            for name, outcome in outcomes.items():
                scores.setdefault(name, []).append(image_score(truth, outcome).score)
        if args.labels:
            write_label_png(args.labels / f"{sample.image_id}.png", labels)
        if args.overlays:
            write_overlay(args.overlays / f"{sample.image_id}.png", contour_overlay(sample.image, labels))
    progress.done()
    per = max(len(sources), 1) * max(len(members), 1)
    print(f"predicted {len(sources)} images with {counted(len(members), 'member')} in {time.perf_counter() - started:.0f} s: "
          f"{forward_seconds / per:.2f} s per image per member in the models", file=sys.stderr)
    return predictions, scores


def write_comparison(args, candidates, plans, scores) -> None:
    import numpy as np

    from ensemble.report import Entry, table, write_csv, write_plot

    if not scores:
        print("warning: --compare needs labels: the images have none and no --solution was given", file=sys.stderr)
        return
    entries = [Entry(m.name, "member", float(np.mean(scores[m.name])), str(m.path)) for m in candidates]
    entries += [Entry(name, "combination", float(np.mean(scores[name])), describe(config))
                for name, (_, _, config) in plans.items()]
    stem = args.out.with_name(args.out.stem + "_compare")
    count = len(scores[candidates[0].name])
    write_csv(entries, stem.with_suffix(".csv"))
    write_plot(entries, stem.with_suffix(".png"), f"Kaggle score on {count} labelled images")
    print(f"comparison on {count} labelled images ({stem}.csv, {stem}.png):")
    print(table(entries))


def describe(config) -> str:
    return f"{config.method}, threshold {config.threshold:g}, seed {config.seed_threshold:g}, min size {config.min_size}"


def choose_members(args, experiment) -> list[Path]:
    from ensemble.members import MemberError, top_checkpoints, trial_checkpoints

    if args.checkpoints:
        return list(args.checkpoints)
    if args.epochs_of:
        trial = args.epochs_of
        if trial == "best":
            if not experiment.results:
                raise MemberError(f"{experiment.folder}: no ranked results to find the best trial in")
            trial = experiment.results[0]["trial"]
        return trial_checkpoints(experiment, trial)
    return top_checkpoints(experiment, args.top_k)


if __name__ == "__main__":
    main()
