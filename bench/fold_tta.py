"""Benchmark: is multi-scale test-time augmentation (--scales) worth its cost,
judged on the out-of-fold score of a refit's fold models?

Each fold model predicts its own fold's images (every image outside the
held-back test set, by the model that never saw its experiment) at one
scale and at several (the median of the maps); the fold ensemble's
post-processing is calibrated on each set of pooled maps
(nucjax.folds.fold_ensemble), and the per-image scores are compared with
the bootstrap of metrics.paired_gain: a gain inside its interval is noise,
and a refit (nucjax.folds.chosen_fold_ensemble) keeps one scale then.

    python bench/fold_tta.py EXPERIMENT [--scales 0.75,1,1.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="a search experiment refit on folds (search.run --folds)")
    parser.add_argument("--scales", default="0.75,1,1.5", help="the multi-scale factors (default: %(default)s)")
    args = parser.parse_args()
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    from ensemble.images import experiment_data
    from nucjax.cli import cache_root
    from nucjax.data import image_kind, load_dataset
    from nucjax.experiment import read_experiment
    from nucjax.folds import fold_ensembles, kept_candidate
    from nucjax.metrics import mean_by
    from nucjax.segmenter import load_model, parse_scales, scales_text

    experiment = read_experiment(args.experiment)
    models = [load_model(p) for p in experiment.fold_checkpoints()]
    samples = load_dataset(experiment_data(experiment, cache_root()), labelled=True).samples
    kinds = {s.image_id: image_kind(s.image) for s in samples}
    started = time.monotonic()
    found = fold_ensembles(models, samples, {}, ((1.0,), parse_scales(args.scales)))
    print(f"both candidates, as a refit makes them: {time.monotonic() - started:.0f} s")
    for ensemble in found:
        by_kind = mean_by(ensemble.image_scores, [kinds[i] for i in ensemble.image_ids])
        print(f"scales {scales_text(ensemble.scales)}: pooled out-of-fold {ensemble.score:.4f} over "
              f"{len(ensemble.image_ids)} images ({', '.join(f'{k} {v:.4f}' for k, v in by_kind.items())})")
    kept, gains = kept_candidate([ensemble.image_scores for ensemble in found])
    print(f"gain of multi-scale: {gains[1]}; a refit keeps {'the multi-scale' if kept else 'the one-scale'} ensemble")


if __name__ == "__main__":
    main()
