"""Choosing an ensemble's members and tuning how their maps become nuclei,
on labelled validation maps: greedy forward selection, and the calibrated
post-processing of every combination asked for.

A plan is a Segmenter over some of the candidates, with its combination
and calibrated post-processing; the first plan is the one submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nucjax.combine import COMBINATIONS
from nucjax.metrics import paired_gain

if TYPE_CHECKING:  # the segmenter loads JAX models: imported where used, so --help stays instant
    from nucjax.segmenter import Segmenter

SELECTIONS = ("greedy", "all")


@dataclass(frozen=True)
class EnsembleConfig:
    combine: str = "mean"  # what scored best over mixed members in our comparison (docs/benchmarks.md)
    quorum: int | None = None  # intersect: members that must agree (default all)
    select: str = "greedy"
    compare: bool = False  # also every other combination, of the chosen members and of all candidates

    def __post_init__(self):
        if self.combine not in COMBINATIONS:
            raise ValueError(f"unknown combination '{self.combine}'; choose one of {', '.join(COMBINATIONS)}")
        if self.select not in SELECTIONS:
            raise ValueError(f"unknown selection '{self.select}'; choose one of {', '.join(SELECTIONS)}")
        if self.quorum is not None and self.quorum < 1:
            raise ValueError(f"--quorum must be at least 1, got {self.quorum}")


@dataclass(frozen=True)
class Plan:
    name: str
    members: tuple[int, ...]  # positions among the candidates
    segmenter: Segmenter
    score: float | None = None  # calibrated validation score, when calibrated


def plan_name(method: str, group: tuple, candidates: int) -> str:
    return f"{method} of {len(group)}" + (" (all)" if len(group) == candidates and candidates > 1 else "")


def _plan(candidates: Segmenter, method: str, group: tuple, config: EnsembleConfig, postprocess, score=None) -> Plan:
    models = tuple(candidates.models[i] for i in group)
    quorum = config.quorum if config.quorum is not None and config.quorum <= len(group) else None
    segmenter = candidates.replace(models=models, combine=method, quorum=quorum, postprocess=postprocess)
    return Plan(plan_name(method, group, len(candidates.models)), group, segmenter, score)


def greedy_selection(candidates: Segmenter, labelled, method: str, config: EnsembleConfig, base) -> tuple[list[int], object, list[float], list[str]]:
    """Forward selection on labelled maps (Caruana et al., 2004): start from
    the candidate with the best validation score, then try the others in
    that order, keeping one only when the calibrated combination's gain
    over the images is beyond their noise (metrics.paired_gain): a member
    kept for less fits the validation images, not the next ones. Returns
    (chosen positions, their post-processing, their per-image scores, one
    line per candidate saying what happened)."""
    from nucjax.segmenter import calibrate_segmenter

    models = candidates.models
    order = sorted(range(len(models)), key=lambda i: -models[i].score)

    def trial(indices):
        quorum = config.quorum if config.quorum is not None and config.quorum <= len(indices) else None
        return calibrate_segmenter(candidates.replace(combine=method, quorum=quorum), labelled, indices, base)

    chosen = [order[0]]
    post, scores = trial(chosen)
    log = [f"{models[order[0]].name}: alone {np.mean(scores):.4f}"]
    for index in order[1:]:
        candidate_post, candidate_scores = trial(chosen + [index])
        gain = paired_gain(candidate_scores, scores)
        log.append(f"{models[index].name}: {np.mean(candidate_scores):.4f} with it, gain {gain}: "
                   f"{'kept' if gain.significant else 'left out'}")
        if gain.significant:
            chosen, post, scores = chosen + [index], candidate_post, candidate_scores
    return sorted(chosen, key=order.index), post, scores, log


def calibrated_plans(candidates: Segmenter, labelled, config: EnsembleConfig) -> tuple[list[Plan], list[str]]:
    """Plans tuned on labelled maps (see nucjax.segmenter.labelled_maps),
    the one to submit first, and a log of the greedy choice. candidates is
    a Segmenter over every candidate with ensemble=True."""
    from nucjax.segmenter import calibrate_segmenter, ensemble_postprocess

    everyone = tuple(range(len(candidates.models)))
    base = ensemble_postprocess(candidates.models)
    plans, log = [], []
    if config.select == "greedy" and len(everyone) > 1:
        chosen, post, scores, log = greedy_selection(candidates, labelled, config.combine, config, base)
        chosen = tuple(chosen)
        plans.append(_plan(candidates, config.combine, chosen, config, post, float(np.mean(scores))))
    else:
        chosen = everyone
    wanted = [(config.combine, chosen)]
    if config.compare:
        groups = [chosen] + ([everyone] if chosen != everyone else [])
        wanted += [(method, group) for group in groups for method in COMBINATIONS if (method, group) not in wanted]
    for method, group in wanted:
        if any(p.members == group and p.segmenter.combine == method for p in plans):
            continue
        quorum = config.quorum if config.quorum is not None and config.quorum <= len(group) else None
        post, scores = calibrate_segmenter(candidates.replace(combine=method, quorum=quorum), labelled, group, base)
        plans.append(_plan(candidates, method, group, config, post, float(np.mean(scores))))
    return plans, log


def uncalibrated_plans(candidates: Segmenter, config: EnsembleConfig) -> list[Plan]:
    """Plans over every candidate with the best one's post-processing
    (one candidate alone: its own maps and settings, as nucjax.predict)."""
    everyone = tuple(range(len(candidates.models)))
    methods = [config.combine] + ([m for m in COMBINATIONS if m != config.combine] if config.compare else [])
    return [_plan(candidates, method, everyone, config, candidates.postprocess) for method in methods]


def fold_plans(models, postprocess, config: EnsembleConfig, options: dict) -> tuple[Segmenter, list[Plan]]:
    """(every fold model as one Segmenter, the plans): a refit's fold models,
    all of them members (each saw a different share of the images, so none
    is chosen over another on images some of them trained on), post-processed
    as calibrated on their pooled out-of-fold maps (nucjax.folds)."""
    from nucjax.segmenter import Segmenter

    candidates = Segmenter.of(models, postprocess, ensemble=True, combine=config.combine, quorum=config.quorum, **options)
    return candidates, uncalibrated_plans(candidates, config)


def plans_segment(candidates: Segmenter, plans: list[Plan], every_member: bool = False):
    """A segment function for nucjax.segmenter.segment_folder: each image's
    {plan name: labels}, the first plan's submitted; with every_member, also
    each candidate alone (its own maps and post-processing). Only the
    models some outcome needs predict, each once per image."""
    needed = candidates.models if every_member else tuple(dict.fromkeys(m for p in plans for m in p.segmenter.models))
    predicting = candidates.replace(models=needed)
    position = {id(m): i for i, m in enumerate(needed)}

    def segment(image):
        scale, maps = predicting.member_maps(image)
        outcomes = {}
        for plan in plans:
            picked = [maps[position[id(m)]] for m in plan.segmenter.models]
            outcomes[plan.name] = plan.segmenter.nuclei(image, scale, picked)
        if every_member:
            for model, found in zip(needed, maps):
                outcomes[model.name] = predicting.labels(image, scale, found, model.config.postprocess)
        return outcomes

    return segment


def ensemble_plans(models, calibration, config: EnsembleConfig, options: dict,
                   progress=lambda items, description: items):
    """(every candidate as one Segmenter, the plans, the greedy log): tuned
    on the labelled calibration samples when there are any, else with the
    best model's settings. options: scale, scale_by, tta (Segmenter fields);
    progress(items, description) wraps each pass over the calibration
    samples (a progress bar)."""
    from nucjax.segmenter import Segmenter, labelled_maps

    options = {"combine": config.combine, "quorum": config.quorum, **options}
    if not calibration:
        candidates = Segmenter.of(models, **options)
        return candidates, uncalibrated_plans(candidates, config), []
    candidates = Segmenter.of(models, ensemble=True, **options)
    plans, log = calibrated_plans(candidates, labelled_maps(candidates, calibration, progress), config)
    return candidates, plans, log
