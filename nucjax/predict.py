"""python -m nucjax.predict: one model's Kaggle submission for a folder of images.

Predicts every image at its own size, at the nucleus scale the model was
trained for, with the post-processing calibrated on validation. The Kaggle
score is printed last when the images have labels (or --solution).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from nucjax.cli import add_prediction_arguments, checked_backend, checked_scale, checked_scales, data_command_parser, fail


USAGE = "python -m nucjax.predict --checkpoint PATH [--data DIR] [--out CSV] [options]"


def parse_args(argv=None):
    parser = data_command_parser("nucjax.predict", __doc__, usage=USAGE)
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="PATH",
                        help="checkpoint, training run or bioimage.io zip")
    parser.add_argument("--postprocess", choices=("default", "cc", "reference", "distance", "border"), default="default",
                        metavar="NAME", help="the checkpoint's (default), cc, reference, distance or border")
    parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all", metavar="PART",
                        help="all, or the checkpoint's train, val or test images (%(default)s)")
    add_prediction_arguments(parser)
    args = parser.parse_args(argv)
    args.scale = checked_scale(parser, args.scale)
    args.scales = checked_scales(parser, args.scales)
    checked_backend(parser, args.backend)
    return args


def split_part(sources, part: str, train_config) -> tuple[list, dict[str, str]]:
    """The sources in one part of the split a checkpoint was validated on
    (unreadable images are left to the prediction loop to report), and the
    acquisition groups named as its training named them: clustered over
    its training and validation images (and the test images, for that part)."""
    from nucjax.data import run_groups
    from nucjax.segmenter import readable_samples

    readable = list(readable_samples(sources))
    train, val, test = train_config.split_samples(readable)
    chosen = {s.image_id for s in {"train": train, "val": val, "test": test}[part]}
    groups = run_groups(train, val, test if part == "test" else [])
    return [s for s in sources if s.image_id in chosen], groups


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import image_sources, planned_for, predict_folder, use_jax_environment

    use_jax_environment()
    from nucjax.segmenter import Segmenter
    from nucjax.checkpoints import CheckpointError

    try:
        segmenter = Segmenter.load(args.checkpoint, args.backend, scale=args.scale, tta=args.tta, scale_by=args.scale_by,
                                   scales=args.scales or (1.0,))
    except CheckpointError as err:
        fail(str(err))
    if args.postprocess != "default":
        segmenter = segmenter.replace(postprocess=dataclasses.replace(segmenter.postprocess, method=args.postprocess))
    sources = image_sources(args.data, args.strict)
    (model,) = segmenter.models
    groups = None
    if args.split != "all":
        sources, groups = split_part(sources, args.split, model.config.train)
    print(f"predicting {len(sources)} images with {model.path} (validation {model.score:.4f}, scale {segmenter.scale_mode()})",
          file=sys.stderr)
    predict_folder(planned_for(segmenter, sources).segment, sources, args, groups=groups)


if __name__ == "__main__":
    main()
