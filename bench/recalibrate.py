"""Benchmark: is a checkpoint's validation score held back by its
calibrated post-processing? For chosen epochs of a training run, the
validation images' maps are made once and scored with the saved
(calibrated) post-processing, the defaults, and the best of a full grid
of body and seed thresholds.

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

    from nucjax.postprocess import PostprocessConfig
    from nucjax.segmenter import Segmenter, labelled_maps, labelled_scores
    from nucjax.train.checkpoints import read_checkpoint

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


if __name__ == "__main__":
    main()
