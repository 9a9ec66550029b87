"""Benchmark: how steady the nucleus-scale decision of --scale auto is.

For every kept checkpoint of a training run (train with --max-to-keep
large enough to keep them all) and every validation image of its split,
the first pass estimates the median nucleus diameter and decides the
working scale, three ways: each image by its own first pass, nuclei found
with the fixed SIZING post-processing (nucjax.segmenter; --scale-by
image); each image by its acquisition's median of those (the default,
Segmenter.planned: the validation images grouped by experiment among
themselves); each image by its own first pass with the checkpoint's
calibrated post-processing (before either). Printed, for each way: how
often an image's working scale flips between adjacent checkpoints (native
against shrunk, or shrunk by factors 15% apart: see flipped), by group, and how far the estimate is from the true median
diameter the masks give (median |log2(estimate / truth)|).

    python bench/scale_stability.py --run runs/train --data ../shared/data/dsb2018/stage1_train [--epochs 9 10 11]
        [--out bench/scale_stability.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: Two decisions differ when one keeps the image native and the other
#: shrinks it, or both shrink it by factors further apart than the snap
#: tolerance (nucjax.scale.KEEP_NATIVE_WITHIN): smaller moves are the
#: estimate's ordinary wobble, within the training's scale jitter.
def flipped(a: float, b: float) -> bool:
    from nucjax.scale import KEEP_NATIVE_WITHIN

    return (a == 1.0) != (b == 1.0) or max(a / b, b / a) >= KEEP_NATIVE_WITHIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, nargs="+", help="only these epochs' checkpoints (default: all kept)")
    parser.add_argument("--out", type=Path, help="append a JSON line of the results here")
    args = parser.parse_args()

    from nucjax.cli import load_data, use_jax_environment

    use_jax_environment()
    import numpy as np

    from nucjax.data.split import acquisition_groups, image_descriptor
    from nucjax.scale import acquisition_diameters, median_diameter, scale_to, snapped
    from nucjax.segmenter import SIZING, Segmenter
    from nucjax.checkpoints import list_checkpoints

    checkpoints = [c for c in list_checkpoints(args.run) if args.epochs is None or c.epoch in args.epochs]
    if len(checkpoints) < 2:
        raise SystemExit(f"{args.run}: needs at least two checkpoints, has {len(checkpoints)}")
    train_config = checkpoints[0].config.train
    samples = load_data(args.data, labelled=True).samples
    _, val, _ = train_config.split_samples(samples)
    groups = acquisition_groups([s.image_id for s in samples], [s.image for s in samples])
    truth = [median_diameter(s.labels) for s in val]
    ways = {"per image": lambda info: SIZING, "calibrated sizing": lambda info: info.config.postprocess}
    decisions = {way: [] for way in ("per acquisition", *ways)}  # way -> per checkpoint, per image (diameter, scale)
    val_groups = [groups[s.image_id] for s in val]
    # The acquisitions a prediction of these images plans with: grouped among themselves.
    planned = acquisition_groups([s.image_id for s in val], descriptors=[image_descriptor(s.image) for s in val])
    planned_groups = [planned[s.image_id] for s in val]
    for info in checkpoints:
        segmenter = Segmenter.load(info.path)
        first = segmenter.models[0]
        for way, sizing in ways.items():
            row = []
            for sample in val:
                diameter, _ = segmenter.estimate_diameter(sample.image, sizing=sizing(info))
                row.append((diameter, snapped(scale_to(diameter, first.diameter))))
            decisions[way].append(row)
        shared = acquisition_diameters([d for d, _ in decisions["per image"][-1]], planned_groups)
        decisions["per acquisition"].append([(d, snapped(scale_to(d, first.diameter))) for d in shared])
        shrunk = {g: sum(d[1] != 1.0 for d, gg in zip(decisions["per acquisition"][-1], val_groups) if gg == g)
                  for g in sorted(set(val_groups))}
        print(f"{info.path.name}: images shrunk by group (per acquisition): {shrunk}", file=sys.stderr)

    report = {"run": str(args.run), "checkpoints": [c.epoch for c in checkpoints], "images": len(val),
              "decisions": {way: [[(d, round(sc, 4)) for d, sc in row] for row in rows] for way, rows in decisions.items()},
              "truth": truth, "groups": val_groups}
    for way, rows in decisions.items():
        flips, flips_by_group, pairs = 0, {}, 0
        for i in range(len(rows) - 1):
            if checkpoints[i + 1].epoch != checkpoints[i].epoch + 1:
                continue  # only adjacent epochs
            pairs += 1
            for sample, (_, a), (_, b) in zip(val, rows[i], rows[i + 1]):
                changed = flipped(a, b)
                flips += changed
                group = groups[sample.image_id]
                flips_by_group[group] = flips_by_group.get(group, 0) + changed
        errors = [abs(math.log2(d / t)) for row in rows for (d, _), t in zip(row, truth) if d and t]
        report[way] = {
            "flip_rate": round(flips / (pairs * len(val)), 4),
            "flips_by_group": {g: round(n / (pairs * sum(groups[s.image_id] == g for s in val)), 3)
                               for g, n in sorted(flips_by_group.items())},
            "median_abs_log2_error": round(float(np.median(errors)), 3),
            "not_found": sum(d is None for row in rows for d, _ in row),
        }
        print(f"{way}: {100 * report[way]['flip_rate']:.1f}% of image decisions change between adjacent checkpoints; "
              f"median |log2(estimate / truth)| {report[way]['median_abs_log2_error']:.3f}")
        for group, rate in report[way]["flips_by_group"].items():
            print(f"    {group}: {100 * rate:.0f}%")
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
