"""Benchmark: what each generalisation change is worth, under a split that
holds out whole experiments and under the stratified one.

Each configuration trains the default U-Net for the same number of steps
(not minutes: a busy machine must not change the result) and seed on the
training part of a split, then scores the checkpoint the run chooses
(nucjax.checkpoints.best_checkpoint) on that split's validation
images, by kind and by acquisition group, with how the validation moved
over the epochs (the last epoch, the spread of the last half). The
configurations up to +average add one change at a time, each to the line
above, and +average is the defaults; the options after it each add their
one change to the defaults:

    reference  native scale, the report's preprocessing, no recolouring (before)
    +scale     images rescaled to the canonical nucleus diameter (and --scale auto)
    +stain     haematoxylin density for colour images, percentile normalisation
    +recolour  recoloured copies of training images
    +average   validate, save and predict with a moving average of the weights (the defaults)
    +balance   training images drawn balanced across acquisition groups (0.5)
    +blur      a Gaussian blur (sigma 0.5 to 2 px) on 30% of training crops
    +dim       gamma 0.4 and pale nuclei 0.3 (dim nuclei, faded towards the background)

    python bench/generalise.py --data ../shared/data/dsb2018/stage1_train --epochs 4 \\
        [--configs reference +scale +stain +recolour] [--splits group stratified] [--out bench/generalise.jsonl]

A JSON line per run is appended to --out as each run ends, so a long run
can be read as it goes. prediction_cost is the mean number of native-size
passes an image costs (--scale auto: the first pass, plus the rescaled
one when the scale is not kept at 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Cumulative changes: each configuration is the previous one plus its own.
CHANGES = {
    "reference": {"diameter": 0.0, "preprocessing": "reference", "normalisation": "minmax", "recolour": 0.0,
                  "ema_decay": 0.0, "balance": 0.0, "blur": 0.0},
    "+scale": {"diameter": None},
    "+stain": {"preprocessing": None, "normalisation": None},
    "+recolour": {"recolour": None},
    "+average": {"ema_decay": None},
}
#: Options: each is the defaults (every change above) plus its own.
OPTIONS = {
    "+balance": {"balance": 0.5},
    "+blur": {"blur": 0.3},
    "+dim": {"gamma": 0.4, "pale": 0.3},
}


def config_params(name: str) -> dict:
    """The flat params of a configuration: None means the default."""
    from nucjax.config import default_params

    defaults, params = default_params(), {}
    for step, change in CHANGES.items():
        params.update({k: defaults[k] if v is None else v for k, v in change.items()})
        if step == name:
            return params
    if name in OPTIONS:
        return {**params, **OPTIONS[name]}
    raise SystemExit(f"unknown configuration '{name}'; choose from {', '.join([*CHANGES, *OPTIONS])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of 200 steps, batch 8, for each run")
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--configs", nargs="+", default=[*CHANGES, *OPTIONS])
    parser.add_argument("--splits", nargs="+", default=["group"], choices=("group", "stratified"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "generalise.jsonl")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nucjax-generalise"))
    args = parser.parse_args()

    from nucjax.cli import load_data, use_jax_environment

    use_jax_environment()
    import numpy as np

    from nucjax.config import from_params
    from nucjax.data import split_samples
    from nucjax.segmenter import Segmenter
    from nucjax.checkpoints import best_checkpoint
    from nucjax.train.loop import train_and_evaluate

    samples = load_data(args.data, labelled=True).samples
    for split in args.splits:
        train, val, _ = split_samples(samples, 0.15, seed=0, method=split)
        for name in args.configs:
            config = from_params({**config_params(name), "split": split, "epochs": args.epochs,
                                  "steps_per_epoch": args.steps_per_epoch})
            workdir = (args.workdir / f"{split}-{name}").absolute()
            if workdir.exists():
                raise SystemExit(f"{workdir} exists: a run there would resume; remove it or pass another --workdir")
            started = time.monotonic()
            results = train_and_evaluate(config, train, val, workdir)
            chosen = best_checkpoint(workdir)
            best = next(r for r in results if r.epoch == chosen.epoch)
            scores = [r.score for r in results]
            last_half = scores[len(scores) // 2:]
            # The cost of --scale auto: model pixels per image against one native pass.
            segmenter = Segmenter.load(chosen.path).planned(s.image for s in val)
            passes = []
            for sample in val:
                scale = segmenter.member_maps(sample.image)[0]
                if segmenter.scale_mode() == "auto":  # the first, native pass, then the rescaled one unless kept
                    passes.append(1.0 + (scale**2 if scale != 1.0 else 0.0))
                else:
                    passes.append(scale**2)
            row = {"split": split, "config": name, "train_images": len(train), "val_images": len(val),
                   "epochs": best.epochs, "best_epoch": best.epoch, "images_per_s": round(float(np.mean([r.images_per_s for r in results])), 1),
                   "minutes": round((time.monotonic() - started) / 60, 1), "score": round(best.score, 4),
                   "last": round(scores[-1], 4), "best_mean": round(max(scores), 4),
                   "last_half_spread": round(max(last_half) - min(last_half), 4), "scores": [round(x, 4) for x in scores],
                   "prediction_cost": round(float(np.mean(passes)), 2),
                   **{f"kind:{k}": round(v, 4) for k, v in best.scores_by_kind.items()},
                   **{f"group:{k}": round(v, 4) for k, v in best.scores_by_group.items()}}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
