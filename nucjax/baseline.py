"""python -m nucjax.baseline: the reference report's simple threshold model.

Preprocess, threshold, connected components, specks dropped; writes a
Kaggle submission with a row for every image of --data (an empty one for
an unreadable image; --strict stops at it). With --sweep the threshold
is picked on the training part of a fixed stratified split, by the Kaggle
metric (the report's full-mask pick is printed beside it). Labelled
images are scored on the validation part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nucjax.cli import data_command_parser, data_root, fail, image_sources, predict_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = data_command_parser("nucjax.baseline", __doc__)
    parser.add_argument("--out", type=Path, default=Path("submission.csv"), help="submission CSV (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None, help="threshold on the preprocessed 0..255 image (default: 40, the report's)")
    parser.add_argument("--min-size", type=int, default=None, help="drop objects under this many pixels (default: 20; 0 is the report's model exactly)")
    parser.add_argument("--sweep", action="store_true", help="pick the threshold on the training split's labels")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share of each image kind (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.sweep and args.threshold is not None:
        parser.error("--sweep picks the threshold: give --threshold or --sweep, not both")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.data import DataError, load_dataset, split_samples
    from nucjax.metrics import full_mask_score, image_score
    from nucjax.models.threshold import DEFAULT_MIN_SIZE, DEFAULT_THRESHOLD, sweep_thresholds, threshold_labels

    root = data_root(args.data)
    sources = image_sources(root, strict=args.strict)  # warns about stray files; the loop below about bad images
    try:
        samples = load_dataset(root, labelled=None, strict=args.strict).samples
    except DataError as err:
        fail(str(err))
    labelled = [s for s in samples if s.labels is not None]
    train, val, _ = split_samples(labelled, args.val_fraction, seed=args.seed)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    min_size = DEFAULT_MIN_SIZE if args.min_size is None else args.min_size

    if args.sweep:
        if not train:
            fail("--sweep needs labelled images (Kaggle layout with masks/)")
        print(f"sweeping thresholds on {len(train)} training images ...", file=sys.stderr)
        result = sweep_thresholds([s.image for s in train], [s.labels for s in train], min_size=min_size)
        threshold = result.best_by_kaggle
        print(f"threshold by Kaggle metric: {threshold:g} (train {max(result.kaggle):.4f}); "
              f"by the report's full-mask score: {result.best_by_full_mask:g} (train {max(result.full_mask):.4f})")

    predictions, _ = predict_folder(lambda image: threshold_labels(image, threshold, min_size), sources,
                                    argparse.Namespace(**{**vars(args), "solution": None, "labels": None, "overlays": None}),
                                    score_label="Kaggle score on every labelled image (training ones included)")
    print(f"threshold {threshold:g}, min size {min_size}")

    by_id = dict(predictions)
    if val:
        kaggle = sum(image_score(s.labels, by_id[s.image_id]).score for s in val) / len(val)
        full = sum(full_mask_score(s.labels, by_id[s.image_id]) for s in val) / len(val)
        print(f"validation ({len(val)} images): full-mask score {full:.4f}")
        print(f"validation Kaggle score: {kaggle:.4f}")


if __name__ == "__main__":
    main()
