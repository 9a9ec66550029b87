"""Group k-fold cross-validation's results: the out-of-fold score, and the
fold models as one ensemble.

Each fold model validated on its own fold's acquisition groups, which no
other fold holds: pooled, their per-image scores cover every image outside
the held-back test set once, each scored by a model that never trained on
its experiment (out_of_fold). The fold models together are the ensemble;
its post-processing is calibrated on the pooled out-of-fold maps, each
image's map from the one model that did not see it (fold_ensemble), at
one scale or, where the pooled score says so beyond the noise, at several
(multi-scale test-time augmentation: chosen_fold_ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucjax.data.split import image_kind
from nucjax.metrics import Gain, image_score, mean_by, paired_gain
from nucjax.postprocess import PostprocessConfig, calibrate
from nucjax.segmenter import LabelledMaps, Model, Segmenter, ensemble_postprocess, labelled_scale_maps, scales_median


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
    scales: tuple[float, ...] = (1.0,)  # the multi-scale factors its maps were made at

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
    scale_by, tta, scales)."""
    scales = tuple((options or {}).get("scales", (1.0,)))
    return fold_ensembles(models, samples, options, (scales,), progress)[0]


#: The multi-scale factors a refit tries against one scale (the DSB2018 2nd place's kind of
#: agreement filter): 0.75 and 1.5 of each image's scale, beside the scale itself.
MULTI_SCALES = (0.75, 1.0, 1.5)


def kept_candidate(scores: list[tuple[float, ...]], confidence: float = 0.9) -> tuple[int, list[Gain | None]]:
    """(the index of the candidate to keep, each candidate's paired gain over
    the first): candidates are per-image scores on the same images, the first
    the plain one. A later candidate is kept only when its gain is beyond the
    noise (the whole paired-bootstrap interval above zero), the largest such
    gain if several; else the first, since a choice on noise loses on
    unseen images."""
    gains = [None] + [paired_gain(other, scores[0], confidence) for other in scores[1:]]
    beyond = [i for i, gain in enumerate(gains) if gain is not None and gain.significant]
    return (max(beyond, key=lambda i: gains[i].mean) if beyond else 0), gains


def fold_ensembles(models: list[Model], samples, options: dict | None, candidates: tuple[tuple[float, ...], ...],
                   progress=lambda items, description: items) -> list[FoldEnsemble]:
    """The fold ensemble at each of `candidates` (multi-scale factors), each
    calibrated on its own pooled out-of-fold maps. Each model predicts its
    fold once, at every factor any candidate names; a candidate's maps are
    the median of its factors' (as Segmenter.member_maps makes them)."""
    options = {key: value for key, value in (options or {}).items() if key != "scales"}
    every = tuple(sorted({factor for scales in candidates for factor in scales}))
    parts, ids = [[] for _ in candidates], []
    for model, own in zip(models, fold_samples(models, samples)):
        segmenter = Segmenter.of([model], ensemble=True, scales=every, **options)
        items = [[] for _ in candidates]
        for sample, working, (at_scales,) in labelled_scale_maps(segmenter, own, progress):
            for item, scales in zip(items, candidates):
                chosen = scales_median([at_scales[every.index(factor)] for factor in scales])
                item.append(LabelledMaps(sample.image, sample.labels, working, [chosen]))
        for part, item, scales in zip(parts, items, candidates):
            part.append((segmenter.replace(scales=scales), item))
        ids += [s.image_id for s in own]
    base = ensemble_postprocess(models)
    found = []
    for part, scales in zip(parts, candidates):
        postprocess, scores = pooled_calibration(part, base)
        found.append(FoldEnsemble(postprocess, tuple(ids), tuple(scores), tuple(scales)))
    return found


def chosen_fold_ensemble(models: list[Model], samples, options: dict | None = None,
                         candidates: tuple[tuple[float, ...], ...] = ((1.0,), MULTI_SCALES),
                         progress=lambda items, description: items) -> tuple[FoldEnsemble, list[dict]]:
    """The fold ensemble at the first of `candidates` (multi-scale factors,
    the first plain) unless another beats it on the pooled out-of-fold score
    beyond the noise (fold_ensembles, kept_candidate). Returns (the kept
    FoldEnsemble, one record per candidate: scales, score, gain over the
    first, kept)."""
    found = fold_ensembles(models, samples, options, candidates, progress)
    kept, gains = kept_candidate([f.image_scores for f in found])
    tried = [{"scales": list(f.scales), "score": f.score, "kept": i == kept,
              **({"gain": gain.mean, "low": gain.low, "high": gain.high} if gain is not None else {})}
             for i, (f, gain) in enumerate(zip(found, gains))]
    return found[kept], tried
