"""Benchmark: when should an acquisition's median diameter outvote an
image's own estimate? Judged on the out-of-fold score of a refit's fold
models.

Each fold model estimates the nucleus diameter of each of its own fold's
images (its first pass), the fold's images are grouped by acquisition as a
prediction plans them (nucjax.data.split.acquisition_groups), and each
image is segmented at the scale each rule gives (nucjax.scale.
acquisition_diameters with outvote R): R 1, the group's median always;
inf, the image's own estimate always; between, the median only where the
image's estimate lies more than R times from it. The per-image scores are
compared with the paired bootstrap of metrics.paired_gain against R 1,
and against the scale the masks' own median diameter gives (what a
perfect estimate would reach). The rule the checkpoints were validated
with reproduces their recorded scores (printed as a check).

    python bench/acquisition_scale.py EXPERIMENT [--ratios 1,1.5,2,3,inf]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="a search experiment refit on folds (search.run --folds)")
    parser.add_argument("--ratios", default="1,1.5,2,3,inf", help="the outvote ratios to compare (default: %(default)s)")
    args = parser.parse_args()
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    import numpy as np

    from ensemble.images import experiment_data
    from nucjax.checkpoints import read_checkpoint
    from nucjax.cli import cache_root
    from nucjax.data import image_kind, load_dataset
    from nucjax.data.split import acquisition_groups, image_descriptor
    from nucjax.experiment import read_experiment
    from nucjax.folds import fold_samples
    from nucjax.metrics import image_score, mean_by, paired_gain
    from nucjax.scale import OUTVOTE_RATIO, acquisition_diameters, median_diameter, scale_to, snapped
    from nucjax.segmenter import Segmenter, load_model

    ratios = [float(r) for r in args.ratios.split(",")]
    experiment = read_experiment(args.experiment)
    paths = experiment.fold_checkpoints()
    models = [load_model(p) for p in paths]
    samples = load_dataset(experiment_data(experiment, cache_root()), labelled=True).samples
    scores = {r: [] for r in ratios}
    masks = []  # each image at the scale its masks' median diameter gives
    recorded, kinds, groups_seen = [], [], []
    for fold, (path, model, own) in enumerate(zip(paths, models, fold_samples(models, samples))):
        segmenter = Segmenter.of([model])
        found = [segmenter.estimate_diameter(s.image)[0] for s in own]
        planned = acquisition_groups([s.image_id for s in own], descriptors=[image_descriptor(s.image) for s in own])
        groups = [planned[s.image_id] for s in own]
        factors = {r: [snapped(scale_to(d, model.diameter)) for d in acquisition_diameters(found, groups, r)] for r in ratios}
        for i, sample in enumerate(own):
            at_masks = snapped(scale_to(median_diameter(sample.labels), model.diameter))
            # Each distinct scale the rules (and the masks) give this image is segmented once.
            at = {f: image_score(sample.labels, segmenter.replace(scale=f).segment(sample.image)).score
                  for f in {at_masks, *(factors[r][i] for r in ratios)}}
            for r in ratios:
                scores[r].append(at[factors[r][i]])
            masks.append(at[at_masks])
        metrics = read_checkpoint(path).metrics
        recorded_scores = dict(zip(metrics["image_ids"], metrics["image_scores"]))
        recorded += [recorded_scores[s.image_id] for s in own]
        kinds += [image_kind(s.image) for s in own]
        groups_seen += [f"fold {fold} {group}" for group in groups]  # each fold plans and names its own groups
        print(f"{path}: {len(own)} images", flush=True)
    print(f"{len(recorded)} out-of-fold images; recorded by the refit: {np.mean(recorded):.4f}")
    for r in ratios:
        by_kind = mean_by(scores[r], kinds)
        gain = "" if r == ratios[0] else f", against outvote {ratios[0]:g}: {paired_gain(scores[r], scores[ratios[0]])}"
        print(f"outvote {r:g}{' (default)' if r == OUTVOTE_RATIO else ''}: {np.mean(scores[r]):.4f} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in by_kind.items())}){gain}; "
              f"largest difference from recorded {max(abs(a - b) for a, b in zip(scores[r], recorded)):.4f}")
    best = max(ratios, key=lambda r: np.mean(scores[r]))
    print(f"the masks' diameters: {np.mean(masks):.4f} ({', '.join(f'{k} {v:.4f}' for k, v in mean_by(masks, kinds).items())}), "
          f"against outvote {best:g}: {paired_gain(masks, scores[best])}")
    # The acquisitions where the rules differ, as each fold's prediction planned them.
    changed = sorted({g for g, *values in zip(groups_seen, *scores.values()) if len(set(values)) > 1})
    for group in changed:
        means = [np.mean([s for s, g in zip(scores[r], groups_seen) if g == group]) for r in ratios]
        count = groups_seen.count(group)
        print(f"  {group} ({count}): " + ", ".join(f"{r:g} {m:.3f}" for r, m in zip(ratios, means)))
    if OUTVOTE_RATIO not in ratios:
        print(f"(the default outvote, {OUTVOTE_RATIO:g}, was not among the ratios)")


if __name__ == "__main__":
    main()
