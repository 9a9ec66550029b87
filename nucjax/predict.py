"""python -m nucjax.predict: one model's Kaggle submission for a folder of images.

CHECKPOINT is a checkpoint folder or a training run folder (then its best
checkpoint). The model predicts every image at its original size and the
post-processing calibrated on validation (stored in the checkpoint) turns
probabilities into nuclei. Every image of the folder gets a row; an
unreadable image is reported and gets an empty row, the others are still
predicted. When the folder has labels, the Kaggle score is printed last.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from nucjax.cli import data_command_parser, fail


def parse_args(argv=None):
    parser = data_command_parser("nucjax.predict", __doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder or training run folder")
    parser.add_argument("--out", type=Path, default=Path("submission.csv"), help="submission CSV (default: %(default)s)")
    parser.add_argument("--postprocess", choices=("default", "cc", "reference", "distance", "border"), default="default",
                        help="post-processing method (cc: plain connected components; reference: the report's chain); "
                             "default: the checkpoint's, with its calibrated thresholds")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="predict only one part of the training split the checkpoint was validated on (default: all images)")
    parser.add_argument("--overlays", type=Path, help="also write each image with its nuclei outlined, as PNGs in this folder")
    parser.add_argument("--tta", action="store_true", help="average the maps over the 8 flips and rotations (8x slower)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import use_compilation_cache

    use_compilation_cache()
    import numpy as np

    from nucjax.cli import data_root
    from nucjax.data import DataError, find_samples, split_samples
    from nucjax.data.kaggle import load_sample
    from nucjax.inference import Predictor, predict_image
    from nucjax.inputs import model_inputs
    from nucjax.metrics import image_score
    from nucjax.pictures import contour_overlay, write_overlay
    from nucjax.postprocess import instances
    from nucjax.submission import write_submission
    from nucjax.train.checkpoints import CheckpointError, load_model

    try:
        model, info = load_model(args.checkpoint)
    except CheckpointError as err:
        fail(str(err))
    try:
        sources, skipped = find_samples(data_root(args.data))
    except DataError as err:
        fail(str(err))
    for entry in skipped:
        print(f"warning: {entry}", file=sys.stderr)
    config = info.config
    post = config.postprocess if args.postprocess == "default" else dataclasses.replace(config.postprocess, method=args.postprocess)
    forward = Predictor(model).bind(model)
    print(f"predicting {len(sources)} images with {info.path} (epoch {info.epoch}, validation {info.score:.4f})", file=sys.stderr)

    loaded = []
    for source in sources:
        try:
            loaded.append((source.image_id, load_sample(source, labelled=None)[0]))
        except DataError as err:
            print(f"warning: {err}: written as an empty prediction", file=sys.stderr)
            loaded.append((source.image_id, None))
    if args.split != "all":
        readable = [s for _, s in loaded if s is not None]
        train, val, _ = split_samples(readable, config.train.val_fraction, seed=config.train.seed)
        chosen = {s.image_id for s in (train if args.split == "train" else val)}
        loaded = [(i, s) for i, s in loaded if i in chosen]

    predictions, scores = [], []
    for n, (image_id, sample) in enumerate(loaded, start=1):
        if sample is None:  # an empty row, whatever the image's size
            predictions.append((image_id, np.zeros((1, 1), np.int32)))
            continue
        probs = predict_image(forward, model_inputs(sample.image, config.model.model), config.inputs, config.model.multiple, args.tta)
        labels = instances(probs, post, sample.image)
        predictions.append((sample.image_id, labels))
        if args.overlays:
            write_overlay(args.overlays / f"{sample.image_id}.png", contour_overlay(sample.image, labels))
        if sample.labels is not None:
            scores.append(image_score(sample.labels, labels).score)
        print(f"\r{n}/{len(loaded)} images", end="", file=sys.stderr)
    print(file=sys.stderr)
    rows = write_submission(args.out, predictions)
    print(f"wrote {args.out}: {len(predictions)} images, {rows} rows")
    if scores and len(scores) == len(predictions):
        print(f"Kaggle score: {sum(scores) / len(scores):.4f}")


if __name__ == "__main__":
    main()
