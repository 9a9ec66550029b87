"""Benchmark: what fine texture costs a checkpoint on unseen experiments.

Scores checkpoints of a training run on their validation split as
`nucjax.predict --split val` does (by kind and group), once as trained and
once for each --sigma with the network's inputs smoothed by that many px
(UNetConfig.smooth) though it trained without: where a group's score
rises, the checkpoint misreads texture finer than a nucleus there. This
is how the late decline on the held-out large-nucleus groups was traced
to texture (README, Measured); `nucjax.train --smooth` is what it led to.

    python bench/smoothed_inputs.py --run runs/train --data ../shared/data/dsb2018/stage1_train [--epochs 5 14]
        [--sigma 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training run folder (nucjax.train --out)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, nargs="*", help="checkpoints to score (default: the run's chosen one)")
    parser.add_argument("--sigma", type=float, nargs="+", default=[1.0], help="smoothing sigmas, px (default: 1)")
    args = parser.parse_args()

    from nucjax import predict
    from nucjax import checkpoints

    restore = checkpoints.load_model
    submission = Path(tempfile.mkdtemp()) / "submission.csv"  # predict writes one; only its scores matter here
    checkpoints_to_score = [args.run / "checkpoints" / f"epoch_{e:04d}" for e in args.epochs] if args.epochs else [args.run]
    for checkpoint in checkpoints_to_score:
        for sigma in [None, *args.sigma]:

            def with_smoothing(path, *rest, sigma=sigma, **options):
                network, info = restore(path, *rest, **options)
                if sigma is not None:
                    network.config = dataclasses.replace(network.config, smooth=sigma)
                return network, info

            checkpoints.load_model = with_smoothing
            print(f"== {checkpoint.name}: {'as trained' if sigma is None else f'inputs smoothed by {sigma} px'}", flush=True)
            predict.main(["--checkpoint", str(checkpoint), "--data", args.data, "--split", "val",
                          "--out", str(submission)])
    checkpoints.load_model = restore


if __name__ == "__main__":
    main()
