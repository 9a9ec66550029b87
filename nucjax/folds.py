"""Group k-fold cross-validation's results: the out-of-fold score, and the
fold models as one ensemble.

Each fold model validated on its own fold's acquisition groups, which no
other fold holds: pooled, their per-image scores cover every image outside
the held-back test set once, each scored by a model that never trained on
its experiment (out_of_fold). The fold models together are the ensemble;
its post-processing is calibrated on the pooled out-of-fold maps, each
image's map from the one model that did not see it (fold_ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucjax.data.split import image_kind
from nucjax.metrics import image_score, mean_by
from nucjax.postprocess import PostprocessConfig, calibrate
from nucjax.segmenter import LabelledMaps, Model, Segmenter, ensemble_postprocess, labelled_maps


def out_of_fold(members: list[tuple[int, dict]]) -> dict:
    """The pooled score of fold models from their checkpoints' validation
    metrics: members is [(fold, metrics)], metrics as nucjax.train.loop
    records them (image_ids, image_scores, image_kinds, image_groups).
    Returns {score, images, by_kind, by_group, folds: [{fold, images, score}]}:
    each image once, scored as nucjax.predict --split val scores it.
    ValueError when a fold is named twice or an image is scored twice."""
    folds = [fold for fold, _ in members]
    if len(set(folds)) != len(folds):
        raise ValueError(f"a fold named twice among {sorted(folds)}")
    ids, scores, kinds, groups, per_fold = [], [], [], [], []
    for fold, metrics in sorted(members, key=lambda m: m[0]):
        image_scores = [float(s) for s in metrics["image_scores"]]
        ids += metrics["image_ids"]
        scores += image_scores
        kinds += metrics.get("image_kinds") or ["?"] * len(image_scores)
        groups += metrics.get("image_groups") or ["?"] * len(image_scores)
        per_fold.append({"fold": fold, "images": len(image_scores), "score": float(np.mean(image_scores))})
    if len(set(ids)) != len(ids):
        raise ValueError("an image is validated by two folds: these are not folds of one split")
    return {"score": float(np.mean(scores)), "images": len(scores), "by_kind": mean_by(scores, kinds),
            "by_group": mean_by(scores, groups), "folds": per_fold}


def fold_samples(models: list[Model], samples) -> list[list]:
    """Each fold model's out-of-fold samples: its own validation part of
    `samples` (all the labelled images its run was split from)."""
    samples = list(samples)
    return [model.config.train.split_samples(samples)[1] for model in models]


@dataclass(frozen=True)
class FoldEnsemble:
    """The fold models' post-processing, calibrated on their pooled
    out-of-fold maps, and each pooled image's score with it."""

    postprocess: PostprocessConfig
    image_ids: tuple[str, ...]
    image_scores: tuple[float, ...]

    @property
    def score(self) -> float:
        return float(np.mean(self.image_scores))


def pooled_calibration(parts: list[tuple[Segmenter, list[LabelledMaps]]], base: PostprocessConfig) -> tuple[PostprocessConfig, list[float]]:
    """(post-processing tuned on every part's maps at once, each image's
    Kaggle score with it). A part is one fold model (a Segmenter with
    ensemble=True: its map rescaled so its threshold sits at 0.5, as
    combine rescales every member) and its labelled out-of-fold maps."""
    combined = [(segmenter, item, segmenter.combined(item.maps)) for segmenter, items in parts for item in items]
    postprocess, _ = calibrate([maps for _, _, maps in combined], [item.working_truth for _, item, _ in combined], base,
                               kinds=[image_kind(item.image) for _, item, _ in combined])
    scores = [image_score(item.truth, segmenter.labels(item.image, item.scale, maps, postprocess)).score
              for segmenter, item, maps in combined]
    return postprocess, scores


def fold_ensemble(models: list[Model], samples, options: dict | None = None,
                  progress=lambda items, description: items) -> FoldEnsemble:
    """Calibrate the fold models' ensemble on their pooled out-of-fold maps:
    each model predicts its own fold's images (planned over them, as its
    validation did), and one post-processing is tuned on all of them.
    One map per image, so every combination (mean, intersect, vote) of the
    members gets the same calibration. options: Segmenter fields (scale,
    scale_by, tta)."""
    options = options or {}
    base = ensemble_postprocess(models)
    parts, ids = [], []
    for model, own in zip(models, fold_samples(models, samples)):
        segmenter = Segmenter.of([model], ensemble=True, **options)
        parts.append((segmenter, labelled_maps(segmenter, own, progress)))
        ids += [s.image_id for s in own]
    postprocess, scores = pooled_calibration(parts, base)
    return FoldEnsemble(postprocess, tuple(ids), tuple(scores))
