"""Benchmark: a fold ensemble's maps averaged, then post-processed once (the
default), against each member's nuclei fused (nucjax.fusion), on the test
images the search held back, which no member trained on.

Every member's map is post-processed with the ensemble's calibration, which
was made on single-member maps (the pooled out-of-fold maps), then the
members' nuclei are fused: kept where a quorum of members found them. The
scores are paired over the images (metrics.paired_gain, 90% intervals).
A last row calibrates the mean of maps on the test images themselves: an
upper bound (it is tuned on what it is scored on) of what calibrating the
averaged maps could give, which no fold ensemble has data for.

    python bench/fold_fusion.py EXPERIMENT [--quorum Q]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="a search experiment refit on folds (search.run --folds)")
    parser.add_argument("--quorum", type=int, nargs="*", help="members that must find a nucleus (default: each from 2 to all)")
    args = parser.parse_args()
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    import numpy as np

    from ensemble.images import experiment_data
    from ensemble.report import gain_text
    from nucjax.cli import cache_root
    from nucjax.combine import rescaled
    from nucjax.data import image_kind, load_dataset
    from nucjax.experiment import read_experiment
    from nucjax.fusion import fuse_instances
    from nucjax.metrics import image_score, mean_by, paired_gain
    from nucjax.segmenter import LabelledMaps, Segmenter, calibrate_segmenter

    experiment = read_experiment(args.experiment)
    segmenter = Segmenter.load(args.experiment)
    models = segmenter.models
    samples = load_dataset(experiment_data(experiment, cache_root()), labelled=True).samples
    test = models[0].config.train.split_samples(samples)[2]
    quorums = args.quorum or list(range(2, len(models) + 1))
    segmenter = segmenter.planned([s.image for s in test])
    scores: dict[str, list[float]] = {}
    labelled = []
    started = time.monotonic()
    for sample in test:
        scale, maps = segmenter.member_maps(sample.image)
        labelled.append(LabelledMaps(sample.image, sample.labels, scale, maps))
        found = {"mean of maps (default)": segmenter.labels(sample.image, scale, segmenter.combined(maps))}
        members = [segmenter.labels(sample.image, scale, rescaled(m, model.threshold)) for m, model in zip(maps, models)]
        found.update({f"member {i}": labels for i, labels in enumerate(members)})
        found.update({f"fused nuclei, quorum {q}": fuse_instances(members, q) for q in quorums})
        for name, labels in found.items():
            scores.setdefault(name, []).append(image_score(sample.labels, labels).score)
    _, scores["mean of maps, calibrated on these images (upper bound)"] = calibrate_segmenter(segmenter, labelled)
    kinds = [image_kind(s.image) for s in test]
    print(f"{len(test)} held-back test images, {len(models)} fold models, scales {segmenter.scales}, "
          f"{time.monotonic() - started:.0f} s")
    member_names = [name for name in scores if name.startswith("member")]
    best = max(member_names, key=lambda name: np.mean(scores[name]))
    average = np.mean([scores[name] for name in member_names], axis=0)
    default = "mean of maps (default)"
    print("| entry | score | vs mean of maps | vs best member | vs average member | by kind |")
    print("|---|---|---|---|---|---|")
    for name, values in scores.items():
        by_kind = ", ".join(f"{k} {v:.4f}" for k, v in mean_by(values, kinds).items())
        print(f"| {name} | {np.mean(values):.4f} | {gain_text(paired_gain(values, scores[default]))} "
              f"| {gain_text(paired_gain(values, scores[best]))} | {gain_text(paired_gain(values, average))} | {by_kind} |")


if __name__ == "__main__":
    main()
