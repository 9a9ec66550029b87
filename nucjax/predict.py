"""python -m nucjax.predict: one model's Kaggle submission for a folder of images.

CHECKPOINT is a checkpoint folder, a training run folder (then its best
checkpoint) or a bioimage.io package nucjax.export wrote. The model predicts every image at its original size (at the
nucleus scale it was trained for: see --scale) and the post-processing
calibrated on validation (stored in the checkpoint) turns probabilities
into nuclei. Every image of the folder gets a row; an unreadable image is
reported and gets an empty row (--strict: stops at it). When the images
have labels, or --solution gives them, the Kaggle score is printed last.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from nucjax.cli import add_prediction_arguments, checked_backend, checked_scale, checked_scales, data_command_parser, fail


def parse_args(argv=None):
    parser = data_command_parser("nucjax.predict", __doc__)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="checkpoint folder, training run folder or bioimage.io package (nucjax.export's zip)")
    parser.add_argument("--postprocess", choices=("default", "cc", "reference", "distance", "border"), default="default",
                        help="post-processing method (cc: plain connected components; reference: the report's chain); "
                             "default: the checkpoint's, with its calibrated thresholds")
    parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                        help="predict only one part of the split the checkpoint was validated on; test: the images "
                             "its run held back from both (a search's test images) (default: all images)")
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
                                   scales=args.scales)
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
