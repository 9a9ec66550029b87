"""Benchmark: scoring 65 labelled images with nucjax.metrics, beside stardist.matching.

Both score the same label images in the same run: the truth, and the simple
threshold model's prediction after a round trip through a Kaggle submission
CSV (so the scores are those of a real submission). Prints the time of each,
their ratio, and the largest per-image difference in score.

stardist is not a dependency: give the benchmark its own environment.

    python -m venv bench/.venv && . bench/.venv/bin/activate
    pip install numpy opencv-python-headless stardist
    python bench/score_speed.py [--data ../shared/data/dsb2018/stage1_train]

stardist counts a hit at IoU >= t where Kaggle says IoU > t; the two differ
only for an IoU exactly on a threshold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from its own environment, without installing nucjax

from nucjax.data import image_kind, load_dataset, stratified_split  # noqa: E402
from nucjax.metrics import IOU_THRESHOLDS, image_score  # noqa: E402
from nucjax.models.threshold import threshold_labels  # noqa: E402
from nucjax.submission import decode_submission, write_submission  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train"


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=65)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from stardist.matching import matching

    dataset = load_dataset(args.data)
    kinds = [image_kind(s.image) for s in dataset.samples]
    # A stratified draw of the set, so every kind is in the 65.
    fraction = min(0.99, args.images / len(dataset))
    chosen = set(stratified_split(dataset.image_ids, kinds, val_fraction=fraction, seed=1).val)
    samples = [s for s in dataset.samples if s.image_id in chosen][: args.images]
    truths = [s.labels for s in samples]
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "submission.csv"
        write_submission(csv, [(s.image_id, threshold_labels(s.image)) for s in samples])
        decoded = decode_submission(csv, {s.image_id: s.labels.shape for s in samples})
    preds = [decoded[s.image_id] for s in samples]
    thresholds = [float(t) for t in IOU_THRESHOLDS]

    def nucjax_scores():
        return [image_score(t, p).score for t, p in zip(truths, preds)]

    def stardist_scores():
        return [float(np.mean([m.accuracy for m in matching(t, p, thresh=thresholds)])) for t, p in zip(truths, preds)]

    # stardist computes IoU in float32: IoU >= (the next float32 above t)
    # is its reading of Kaggle's IoU > t.
    strict = [float(np.nextafter(np.float32(t), np.float32(1))) for t in thresholds]

    def stardist_kaggle_rule():
        return [float(np.mean([m.accuracy for m in matching(t, p, thresh=strict)])) for t, p in zip(truths, preds)]

    ours, theirs, theirs_strict = nucjax_scores(), stardist_scores(), stardist_kaggle_rule()  # warms numba too
    t_ours = best_of(args.repeats, nucjax_scores)
    t_theirs = best_of(args.repeats, stardist_scores)
    print(f"images: {len(samples)} from {args.data} ({sum(int(t.max()) for t in truths)} true nuclei)")
    print(f"mean Kaggle score, nucjax:                 {np.mean(ours):.6f}")
    print(f"mean score, stardist (IoU >= t):          {np.mean(theirs):.6f}")
    print(f"mean Kaggle score, stardist (IoU > t):    {np.mean(theirs_strict):.6f}")
    print(f"largest per-image difference, IoU > t:    {np.abs(np.subtract(ours, theirs_strict)).max():.2e}")
    print(f"largest per-image difference, IoU >= t:   {np.abs(np.subtract(ours, theirs)).max():.2e}")
    print(f"nucjax.metrics:    {t_ours * 1000:8.1f} ms")
    print(f"stardist.matching: {t_theirs * 1000:8.1f} ms")
    print(f"speed-up: {t_theirs / t_ours:.1f}x")


if __name__ == "__main__":
    main()
