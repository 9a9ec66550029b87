"""python -m nucjax.train: train a U-Net on DSB2018 (or the synthetic set).

Validates with the Kaggle metric after every epoch on a fixed split
(default: whole experiments held out; scores per kind and per group), checkpoints every epoch into OUT/checkpoints (the chosen one is kept),
resumes from OUT's latest checkpoint when OUT already holds a run, and
writes the per-epoch prediction film to OUT/film.gif. The defaults are the
settings that trained best on a 2-core CPU, so a bare run is a good run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nucjax.cli import data_command_parser, fail, load_data
from nucjax.config import LOSSES, PIPELINES, PRECISIONS, SCHEDULES
from nucjax.data.split import SPLITS
from nucjax.inputs import MODES
from nucjax.models.unet_config import MODELS, NORMS
from nucjax.preprocess import NORMALISATIONS, PREPROCESSING


#: The flags that set one flat parameter (see nucjax.config.from_params):
#: (flag, parameter, help). Defaults and choices come from the dataclasses.
PARAMETER_FLAGS = (
    ("--model", "model", "U-Net: standard or extended"),
    ("--size", "size", "side of the training squares"),
    ("--mode", "mode", "crop: crops of the (rescaled) image; resize: the report's whole-image resize"),
    ("--diameter", "diameter", "canonical nucleus diameter (px) images are rescaled to with --scale auto"),
    ("--scale-jitter", "scale_jitter", "random rescaling around the canonical diameter, 1 +- this"),
    ("--preprocessing", "preprocessing", "reference: the report's grey and inversion; stain: haematoxylin density for colour images"),
    ("--normalisation", "normalisation", "minmax (the report's stretch) or percentile (1 to 99.8)"),
    ("--recolour", "recolour", "probability that an image also trains recoloured (stain jitter, grey, inversion, channel shuffle, tint)"),
    ("--base-filters", "base_filters", "filters of the first level"),
    ("--depth", "depth", "levels of the U-Net"),
    ("--norm", "norm", "after each convolution: batch (the training set's running statistics), group (each "
                       "image's own statistics, in training and prediction alike) or none"),
    ("--batch-size", "batch_size", None),
    ("--steps-per-epoch", "steps_per_epoch", None),
    ("--lr", "learning_rate", "learning rate (the peak of an annealed schedule)"),
    ("--warmup-steps", "warmup_steps", "steps of linear learning-rate warm-up (cosine)"),
    ("--weight-decay", "weight_decay", "decoupled (AdamW) weight decay of the convolution kernels; 0: adam"),
    ("--schedule", "schedule", "constant (held steady by the moving average), cosine (warm-up, then annealed to 1%%) or step (/10 at 1/2 and 3/4)"),
    ("--loss", "loss", "bce_dice or bce"),
    ("--dropout", "dropout", None),
    ("--smooth", "smooth", "sigma (px at the training scale) of a fixed Gaussian smoothing of the network's inputs, "
                           "in training and prediction alike: texture finer than a nucleus taken away (0: none)"),
    ("--elastic", "elastic", "probability of an elastic deformation"),
    ("--blur", "blur", "probability of a Gaussian blur of up to --blur-sigma px"),
    ("--blur-sigma", "blur_sigma", "the largest blur"),
    ("--gamma", "gamma", "the input is raised to a power in exp(+-this): dim nuclei move against bright ones"),
    ("--pale", "pale", "probability that a nucleus is faded towards the background (to --pale-floor..1 of its contrast)"),
    ("--pale-floor", "pale_floor", "the least contrast a faded nucleus keeps"),
    ("--noise", "noise", "probability of Gaussian pixel noise (grain) of up to --noise-sigma"),
    ("--noise-sigma", "noise_sigma", "the largest noise standard deviation, on inputs in 0..1"),
    ("--balance", "balance", "draw training images with probability (their experiment's size) ** -balance: "
                             "0 every image alike, 1 every experiment alike"),
    ("--split", "split", "group: validate on whole experiments held out; stratified: a share of every kind"),
    ("--val-fraction", "val_fraction", "validation share of each image kind"),
    ("--test-fraction", "test_fraction", "share held back from training and validation, as a search's test images "
                                         "(nucjax.predict --split test scores them)"),
    ("--seed", "seed", None),
    ("--max-to-keep", "max_to_keep", "latest checkpoints kept, besides the best"),
    ("--ema-decay", "ema_decay", "weight averaging: validate, save and predict with a moving average of the weights "
                                 "with this decay (0: the weights as they are)"),
    ("--pipeline", "pipeline", "resident: the training set on the device, batches drawn in the train step; "
                               "streaming: each step's images sent to it; auto: resident while it fits"),
    ("--precision", "precision", "bfloat16: mixed precision for GPUs (float32 parameters and loss)"),
)
#: Choices of the string parameters.
CHOICES = {"model": MODELS, "norm": NORMS, "mode": MODES, "preprocessing": PREPROCESSING, "normalisation": NORMALISATIONS,
           "schedule": SCHEDULES, "loss": LOSSES, "split": SPLITS, "pipeline": PIPELINES, "precision": PRECISIONS}


def parse_args(argv=None):
    from nucjax.config import default_params

    defaults = default_params()
    parser = data_command_parser("nucjax.train", __doc__)
    for flag, key, text in PARAMETER_FLAGS:
        default = defaults[key]
        parser.add_argument(flag, dest=key, type=type(default), default=default, choices=CHOICES.get(key),
                            help=f"{text + ' ' if text else ''}(default: %(default)s)")
    parser.add_argument("--scale", choices=("auto", "native"), default="auto",
                        help="auto: train on images rescaled to --diameter (prediction then estimates each image's "
                             "scale); native: train on images as they are (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help=f"epochs (default: {defaults['epochs']}, or as many as fit --time-budget)")
    parser.add_argument("--time-budget", type=float, help="minutes of training; ends cleanly, keeping the best checkpoint")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default: %(default)s)")
    parser.add_argument("--no-border", action="store_true", help="train the body channel only")
    parser.add_argument("--no-flips", action="store_true", help="no flips or 90-degree rotations")
    args = parser.parse_args(argv)
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be a positive number of minutes")
    return args


def experiment_config(args):
    """The ExperimentConfig of the parsed flags, through the one translation."""
    from nucjax.config import from_params

    params = {key: getattr(args, key) for _, key, _ in PARAMETER_FLAGS}
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
