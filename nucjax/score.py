"""python -m nucjax.score SUBMISSION.csv TRUTH: the DSB2018 Kaggle score of a submission.

TRUTH is a Kaggle solution CSV (ImageId, EncodedPixels, Height, Width, as
stage1_solution.csv) or a folder in Kaggle's layout. The mean score is
printed alone on the last line. A malformed submission (bad header, odd or
unsorted RLE, a run out of the image, an unknown or missing ImageId,
overlapping objects) stops with exit status 2 and a message naming the row.
So does a truth folder with a sample that cannot be read with its labels;
stray non-image files in it are ignored with a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nucjax.score",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submission", type=Path, help="submission CSV (ImageId,EncodedPixels)")
    parser.add_argument("truth", type=Path, help="solution CSV, or a folder in Kaggle's layout")
    parser.add_argument("--per-image", action="store_true", help="print a table of every image's score first")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.cli import fail, load_truth
    from nucjax.metrics import image_score
    from nucjax.submission import SubmissionError, decode_submission

    truths = load_truth(args.truth, "truth")
    try:
        preds = decode_submission(args.submission, {i: t.shape for i, t in truths.items()})
    except SubmissionError as err:
        fail(str(err))

    scores = {i: image_score(truths[i], preds[i]) for i in sorted(truths)}
    if args.per_image:
        print(f"{'ImageId':<64}  {'true':>5}  {'pred':>5}  score")
        for image_id, s in scores.items():
            print(f"{image_id:<64}  {s.n_true:>5}  {s.n_pred:>5}  {s.score:.4f}")
    print(f"{sum(s.score for s in scores.values()) / len(scores):.6f}")


if __name__ == "__main__":
    main()
