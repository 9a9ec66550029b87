"""python -m nucjax.baseline: the reference report's simple threshold model.

Preprocess, threshold, connected components; writes a Kaggle submission for
every image of --data. With --sweep the threshold is picked on the training
part of a fixed stratified split, by the Kaggle metric (the report's
full-mask pick is printed beside it). Labelled images are scored on the
validation part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nucjax.cli import DATA_HELP, add_data_arguments, data_root, fail, report_skipped


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nucjax.baseline",
        description=__doc__.split("\n\n", 1)[1],
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("submission.csv"), help="submission CSV (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None, help="threshold on the preprocessed 0..255 image (default: 40, the report's)")
    parser.add_argument("--sweep", action="store_true", help="pick the threshold on the training split's labels")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share of each image kind (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.sweep and args.threshold is not None:
        parser.error("--sweep picks the threshold: give --threshold or --sweep, not both")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.data import DataError, image_kind, load_dataset, stratified_split
    from nucjax.metrics import full_mask_score, image_score
    from nucjax.models.threshold import DEFAULT_THRESHOLD, sweep_thresholds, threshold_labels
    from nucjax.submission import write_submission

    try:
        dataset = load_dataset(data_root(args.data), labelled=None, strict=args.strict)
    except DataError as err:
        fail(str(err))
    report_skipped(dataset)
    samples = dataset.samples
    labelled = [s for s in samples if s.labels is not None]
    split = stratified_split([s.image_id for s in labelled], [image_kind(s.image) for s in labelled], args.val_fraction, seed=args.seed)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold

    if args.sweep:
        train = [s for s in labelled if s.image_id in set(split.train)]
        if not train:
            fail("--sweep needs labelled images (Kaggle layout with masks/)")
        print(f"sweeping thresholds on {len(train)} training images ...", file=sys.stderr)
        result = sweep_thresholds([s.image for s in train], [s.labels for s in train])
        threshold = result.best_by_kaggle
        print(f"threshold by Kaggle metric: {threshold:g} (train {max(result.kaggle):.4f}); "
              f"by the report's full-mask score: {result.best_by_full_mask:g} (train {max(result.full_mask):.4f})")

    predictions = [(s.image_id, threshold_labels(s.image, threshold)) for s in samples]
    rows = write_submission(args.out, predictions)
    print(f"wrote {args.out}: {len(samples)} images, {rows} rows, threshold {threshold:g}")

    by_id = dict(predictions)
    val = [s for s in labelled if s.image_id in set(split.val)]
    if val:
        kaggle = sum(image_score(s.labels, by_id[s.image_id]).score for s in val) / len(val)
        full = sum(full_mask_score(s.labels, by_id[s.image_id]) for s in val) / len(val)
        print(f"validation ({len(val)} images): full-mask score {full:.4f}")
        print(f"validation Kaggle score: {kaggle:.4f}")


if __name__ == "__main__":
    main()
