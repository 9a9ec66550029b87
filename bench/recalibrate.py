"""Benchmark: is a checkpoint's validation score held back by its
calibrated post-processing? For chosen epochs of a training run, the
validation images' maps are made once and scored with the saved
(calibrated) post-processing, the defaults, and the best of a full grid
of body and seed thresholds; then calibrated afresh, as training now
calibrates, with shared settings only and with each kind's own
(PostprocessConfig.by_kind), each by kind.

    python bench/recalibrate.py --run runs/train --data ../shared/data/dsb2018/stage1_train --epochs 3 13
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLDS = (0.4, 0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    args = parser.parse_args()

    from nucjax.cli import load_data, use_jax_environment

    use_jax_environment()
    import numpy as np

    from nucjax.data.split import image_kind
    from nucjax.metrics import paired_gain
    from nucjax.postprocess import PostprocessConfig, calibrate
    from nucjax.segmenter import Segmenter, calibrate_segmenter, labelled_maps, labelled_scores
    from nucjax.checkpoints import read_checkpoint
    from nucjax.metrics import mean_by

    samples = load_data(args.data, labelled=True).samples
    for epoch in args.epochs:
        info = read_checkpoint(args.run / "checkpoints" / f"epoch_{epoch:04d}")
        _, val, _ = info.config.train.split_samples(samples)
        segmenter = Segmenter.load(info.path)
        labelled = labelled_maps(segmenter, val)
        saved = info.config.postprocess

        def mean_score(postprocess):
            return float(np.mean(labelled_scores(segmenter, labelled, postprocess)))

        grid = {(t, s): mean_score(dataclasses.replace(saved, threshold=t, seed_threshold=s))
                for t, s in itertools.product(THRESHOLDS, SEED_THRESHOLDS)}
        best = max(grid, key=grid.get)
        print(f"epoch {epoch}: calibrated {mean_score(saved):.4f} (threshold {saved.threshold}, seed {saved.seed_threshold}); "
              f"defaults {mean_score(PostprocessConfig()):.4f}; grid best {grid[best]:.4f} at threshold {best[0]}, seed {best[1]}")

        kinds = [image_kind(item.image) for item in labelled]

        def by_kind(scores):
            return ", ".join(f"{kind} ({kinds.count(kind)}) {mean:.4f}" for kind, mean in mean_by(scores, kinds).items())

        shared, _ = calibrate([item.maps[0] for item in labelled], [item.working_truth for item in labelled], saved)
        own, own_scores = calibrate_segmenter(segmenter, labelled, base=saved)
        shared_scores = labelled_scores(segmenter, labelled, shared)
        gain = paired_gain(own_scores, shared_scores)
        print(f"  afresh, shared: {np.mean(shared_scores):.4f} ({by_kind(shared_scores)}), threshold {shared.threshold}, "
              f"seed {shared.seed_threshold}")
        print(f"  afresh, by kind: {np.mean(own_scores):.4f} ({by_kind(own_scores)}), own settings {dict(own.by_kind)}; "
              f"gain {gain.mean:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}]")


if __name__ == "__main__":
    main()
