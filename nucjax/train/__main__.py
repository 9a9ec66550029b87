"""python -m nucjax.train: train a U-Net on DSB2018 (or the synthetic set).

Validates with the Kaggle metric after every epoch on whole experiments
held out, checkpoints into OUT/checkpoints, resumes a run in OUT, writes
OUT/film.gif. The defaults trained best, so a bare run is a good run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nucjax.cli import data_command_parser, fail, load_data
from nucjax.config import LOSSES, PIPELINES, PRECISIONS, SCHEDULES
from nucjax.data.split import SPLITS
from nucjax.inputs import MODES
from nucjax.models.unet_config import MODELS
from nucjax.preprocess import NORMALISATIONS, PREPROCESSING


#: The flags that set one flat parameter (see nucjax.config.from_params):
#: (flag, parameter, metavar, help). Defaults and choices come from the
#: dataclasses. Options whose ablations measured no gain (group norm,
#: dropout, weight decay, warm-up, blur, gamma, pale nuclei, balanced
#: sampling) stay in the config, not here: docs/changelog.md.
PARAMETER_FLAGS = (
    ("--model", "model", "NAME", "standard, or extended (three arms)"),
    ("--size", "size", "PX", "side of the training crops"),
    ("--base-filters", "base_filters", "N", "filters of the first level"),
    ("--depth", "depth", "N", "levels of the U-Net"),
    ("--diameter", "diameter", "PX", "nucleus diameter images are scaled to"),
    ("--scale-jitter", "scale_jitter", "F", "random rescaling, 1 +- this"),
    ("--mode", "mode", "NAME", "crop, or resize (the report's)"),
    ("--preprocessing", "preprocessing", "NAME", "stain, or reference (the report's)"),
    ("--normalisation", "normalisation", "NAME", "percentile, or minmax (the report's)"),
    ("--recolour", "recolour", "P", "share of images also trained recoloured"),
    ("--elastic", "elastic", "P", "probability of an elastic deformation"),
    ("--noise", "noise", "P", "probability of pixel noise (grain)"),
    ("--smooth", "smooth", "SIGMA", "input smoothing (px), as in prediction"),
    ("--batch-size", "batch_size", "N", "images per step"),
    ("--steps-per-epoch", "steps_per_epoch", "N", "steps between validations"),
    ("--lr", "learning_rate", "F", "learning rate"),
    ("--schedule", "schedule", "NAME", "constant, cosine or step"),
    ("--loss", "loss", "NAME", "bce_dice or bce"),
    ("--ema-decay", "ema_decay", "F", "weight averaging's decay (0: none)"),
    ("--split", "split", "NAME", "group (whole experiments) or stratified"),
    ("--val-fraction", "val_fraction", "F", "validation share"),
    ("--test-fraction", "test_fraction", "F", "share held back as test images"),
    ("--seed", "seed", "N", "the split's and training's seed"),
    ("--max-to-keep", "max_to_keep", "N", "latest checkpoints kept, and the best"),
    ("--pipeline", "pipeline", "NAME", "auto, resident or streaming"),
    ("--precision", "precision", "NAME", "float32, or bfloat16 on GPUs"),
)
#: Choices of the string parameters.
CHOICES = {"model": MODELS, "mode": MODES, "preprocessing": PREPROCESSING, "normalisation": NORMALISATIONS,
           "schedule": SCHEDULES, "loss": LOSSES, "split": SPLITS, "pipeline": PIPELINES, "precision": PRECISIONS}
USAGE = "python -m nucjax.train [--data DIR] [--out DIR] [--time-budget MIN] [options]"


def parse_args(argv=None):
    from nucjax.config import default_params

    defaults = default_params()
    parser = data_command_parser("nucjax.train", __doc__, usage=USAGE)
    for flag, key, metavar, text in PARAMETER_FLAGS:
        default = defaults[key]
        parser.add_argument(flag, dest=key, type=type(default), default=default, choices=CHOICES.get(key),
                            metavar=metavar, help=f"{text} (%(default)s)")
    parser.add_argument("--scale", choices=("auto", "native"), default="auto", metavar="NAME",
                        help="auto (scaled to --diameter) or native (%(default)s)")
    parser.add_argument("--epochs", type=int, metavar="N", help=f"epochs ({defaults['epochs']}, or what fits --time-budget)")
    parser.add_argument("--time-budget", type=float, metavar="MIN", help="minutes of training; ends cleanly")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), metavar="DIR", help="run folder (%(default)s)")
    parser.add_argument("--no-border", action="store_true", help="train the body channel only")
    parser.add_argument("--no-flips", action="store_true", help="no flips or 90-degree rotations")
    args = parser.parse_args(argv)
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be a positive number of minutes")
    return args


def experiment_config(args):
    """The ExperimentConfig of the parsed flags, through the one translation."""
    from nucjax.config import from_params

    params = {key: getattr(args, key) for _, key, _, _ in PARAMETER_FLAGS}
    params.update(border=not args.no_border, flips=not args.no_flips)
    if args.scale == "native":
        params["diameter"] = 0.0
    if args.epochs:
        params["epochs"] = args.epochs
    return from_params(params)


class Progress:
    """A tqdm bar of the current epoch's steps (on a terminal), and one line per epoch."""

    def __init__(self, steps_per_epoch: int):
        from tqdm import tqdm

        self.bar = tqdm(total=steps_per_epoch, unit="step", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)
        self.steps_per_epoch = steps_per_epoch
        self.started = time.monotonic()
        self.announced = False

    def step(self, step: int, loss: float) -> None:
        if self.bar.n >= self.steps_per_epoch:
            self.bar.reset()
        self.bar.set_description(f"epoch {(step - 1) // self.steps_per_epoch + 1}", refresh=False)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update()

    def epoch(self, result) -> None:
        self.bar.reset()
        if not self.announced:
            self.bar.write(f"training batches: {result.pipeline}", file=sys.stderr)
            self.announced = True
        minutes = (time.monotonic() - self.started) / 60
        kinds = " ".join(f"{k} {v:.3f}" for k, v in result.scores_by_kind.items())
        groups = " ".join(f"{k} {v:.3f}" for k, v in result.scores_by_group.items())
        self.bar.write(f"epoch {result.epoch}/{result.epochs}  loss {result.loss:.4f}  "
                       f"val {result.score:.4f} ({kinds})  {result.images_per_s:.1f} img/s  {minutes:.1f} min"
                       f"{'  (time budget reached)' if result.stopped_early else ''}\n  by group: {groups}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import use_jax_environment

    use_jax_environment()  # before JAX is imported (the config's model module imports it)
    try:
        config = experiment_config(args)
    except ValueError as err:
        fail(f"bad configuration: {err}")
    from nucjax.postprocess import PostprocessConfig
    from nucjax.checkpoints import best_checkpoint, latest_checkpoint
    from nucjax.train.film import FILM_IMAGES, film_frame, write_film, write_frame
    from nucjax.train.loop import TrainingDiverged, train_and_evaluate

    dataset = load_data(args.data, args.strict, labelled=True)
    samples = dataset.samples
    train, val, _ = config.train.split_samples(samples)
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
    finally:
        progress.close()
    frames = write_film(args.out / "film", args.out / "film.gif")
    best = best_checkpoint(args.out)
    print(f"film: {args.out / 'film.gif'} ({frames} epochs)")
    print(f"best checkpoint: {best.path} (epoch {best.epoch}, validation Kaggle score {best.score:.4f})")


if __name__ == "__main__":
    main()
