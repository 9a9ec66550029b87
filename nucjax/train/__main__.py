"""python -m nucjax.train: train a U-Net on DSB2018 (or the synthetic set).

Validates with the Kaggle metric after every epoch on a fixed stratified
split, checkpoints every epoch into OUT/checkpoints (the best is kept),
resumes from OUT's latest checkpoint when OUT already holds a run, and
writes the per-epoch prediction film to OUT/film.gif. The defaults are the
settings that trained best on a 2-core CPU, so a bare run is a good run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nucjax.cli import data_command_parser, fail, load_data


def parse_args(argv=None):
    parser = data_command_parser("nucjax.train", __doc__)
    parser.add_argument("--model", choices=("standard", "extended"), default="standard", help="U-Net (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="side of the training squares (default: %(default)s)")
    parser.add_argument("--mode", choices=("crop", "resize"), default="crop",
                        help="crop: native-resolution crops; resize: the report's whole-image resize (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="epochs (default: 12, or as many as fit --time-budget)")
    parser.add_argument("--time-budget", type=float, help="minutes of training; ends cleanly, keeping the best checkpoint")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default: %(default)s)")
    parser.add_argument("--base-filters", type=int, default=16, help="filters of the first level (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=4, help="levels of the U-Net (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, default=200, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--schedule", choices=("cosine", "constant", "step"), default="cosine", help="(default: %(default)s)")
    parser.add_argument("--loss", choices=("bce_dice", "bce"), default="bce_dice", help="(default: %(default)s)")
    parser.add_argument("--no-border", action="store_true", help="train the body channel only")
    parser.add_argument("--dropout", type=float, default=0.0, help="(default: %(default)s)")
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--elastic", type=float, default=0.3, help="probability of an elastic deformation (default: %(default)s)")
    parser.add_argument("--no-flips", action="store_true", help="no flips or 90-degree rotations")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share of each image kind (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be a positive number of minutes")
    return args


def experiment_config(args):
    from nucjax.augment import AugmentConfig
    from nucjax.config import ExperimentConfig, TrainConfig
    from nucjax.inputs import InputConfig
    from nucjax.models.unet import UNetConfig

    border = not args.no_border
    return ExperimentConfig(
        model=UNetConfig(args.model, args.depth, args.base_filters, not args.no_batch_norm, args.dropout, 2 if border else 1),
        inputs=InputConfig(args.size, args.mode, border),
        augment=AugmentConfig(flips=not args.no_flips, elastic=args.elastic),
        train=TrainConfig(epochs=args.epochs or 12, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                          learning_rate=args.lr, schedule=args.schedule, loss=args.loss, seed=args.seed,
                          val_fraction=args.val_fraction),
    )


class Progress:
    """One status line on stderr, redrawn in place on a terminal."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.tty = sys.stderr.isatty()
        self.last = "val -"
        self.started = time.monotonic()

    def step(self, step: int, loss: float) -> None:
        if self.tty:
            epoch = (step - 1) // self.steps_per_epoch + 1
            sys.stderr.write(f"\repoch {epoch}  step {step}  loss {loss:.4f}  {self.last}   ")
            sys.stderr.flush()

    def epoch(self, result) -> None:
        self.last = f"val {result.score:.4f}"
        minutes = (time.monotonic() - self.started) / 60
        kinds = " ".join(f"{k} {v:.3f}" for k, v in result.scores_by_kind.items())
        sys.stderr.write(("\r" if self.tty else "") + f"epoch {result.epoch}/{result.epochs}  loss {result.loss:.4f}  "
                         f"val {result.score:.4f} ({kinds})  {result.images_per_s:.1f} img/s  {minutes:.1f} min"
                         f"{'  (time budget reached)' if result.stopped_early else ''}\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        config = experiment_config(args)
    except ValueError as err:
        fail(f"bad configuration: {err}")
    from nucjax.data import split_samples
    from nucjax.postprocess import PostprocessConfig
    from nucjax.train.checkpoints import best_checkpoint, latest_checkpoint
    from nucjax.train.film import FILM_IMAGES, film_frame, write_film, write_frame
    from nucjax.train.loop import TrainingDiverged, train_and_evaluate

    dataset = load_data(args.data, args.strict, labelled=True)
    samples = dataset.samples
    train, val, _ = split_samples(samples, config.train.val_fraction, seed=config.train.seed)
    if not train or not val:
        fail(f"need at least one training and one validation image; got {len(train)} and {len(val)} from {len(samples)} images")
    resumed = latest_checkpoint(args.out)
    if resumed is not None:
        print(f"resuming {args.out} from epoch {resumed.epoch} (its stored config wins)", file=sys.stderr)
        config = resumed.config
    print(f"training {config.model.model} U-Net on {len(train)} images, validating on {len(val)}", file=sys.stderr)

    progress = Progress(config.train.steps_per_epoch)
    film_samples = val[:FILM_IMAGES]

    def on_epoch(result, maps):
        progress.epoch(result)
        frame = film_frame([s.image for s in film_samples], [s.labels for s in film_samples], maps[:FILM_IMAGES],
                           PostprocessConfig(**result.postprocess))
        write_frame(frame, args.out / "film", result.epoch)

    try:
        train_and_evaluate(
            config, train, val, args.out,
            time_budget_s=args.time_budget * 60 if args.time_budget else None,
            fit_epochs_to_budget=args.time_budget is not None and args.epochs is None,
            on_step=progress.step, on_epoch=on_epoch,
        )
    except TrainingDiverged as err:
        fail(f"training diverged: {err}", status=3)
    frames = write_film(args.out / "film", args.out / "film.gif")
    best = best_checkpoint(args.out)
    print(f"film: {args.out / 'film.gif'} ({frames} epochs)")
    print(f"best checkpoint: {best.path} (epoch {best.epoch}, validation Kaggle score {best.score:.4f})")


if __name__ == "__main__":
    main()
