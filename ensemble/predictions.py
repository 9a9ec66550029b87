"""Members as loaded models, their probability maps for one image, and the
combination's post-processing re-calibrated on labelled maps.

Members run one after another on each image: however many there are, one
forward pass is in flight, so an ensemble needs the memory of its largest
member only (the weights of a U-Net are a few MB).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.combine import combine, group_quorum
from nucjax.config import ExperimentConfig
from nucjax.postprocess import PostprocessConfig, calibrate


@dataclass(frozen=True)
class Member:
    name: str
    path: Path
    config: ExperimentConfig  # with its calibrated post-processing
    score: float  # its validation score when it was trained
    forward: object  # (B, H, W, C) -> (B, H, W, K) probabilities

    @property
    def threshold(self) -> float:
        return self.config.postprocess.threshold


def member_name(path: Path) -> str:
    """trial/checkpoint, or run/epoch: short and unique within an ensemble."""
    path = Path(path)
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{parent.name}/{path.name}"


def load_member(path: Path) -> Member:
    """A member from a checkpoint folder (or a run folder: its best checkpoint);
    CheckpointError when it cannot be used."""
    from nucjax.inference import Predictor
    from nucjax.train.checkpoints import load_model

    model, info = load_model(path)
    return Member(member_name(info.path), info.path, info.config, info.score, Predictor(model).bind(model))


def member_maps(member: Member, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """A member's (H, W, K) probabilities for an (H, W, 3) uint8 image, at its size,
    each member predicting in its own input mode and size."""
    from nucjax.inference import predict_image
    from nucjax.inputs import model_inputs

    config = member.config
    inputs = model_inputs(image, config.model.model)
    return predict_image(member.forward, inputs, config.inputs, config.model.multiple, tta=tta)


def members_maps(members: list[Member], image: np.ndarray, tta: bool = False, on_member=None) -> list[np.ndarray]:
    """Every member's maps for one image, one member after another;
    on_member(j) is called before the j-th (from 1), for progress."""
    maps = []
    for j, member in enumerate(members, start=1):
        if on_member is not None:
            on_member(j)
        maps.append(member_maps(member, image, tta))
    return maps


def base_postprocess(members: list[Member]) -> PostprocessConfig:
    """The starting point of a combination's calibration: the best member's
    settings, with the body threshold where every rescaled member puts it."""
    best = max(members, key=lambda m: m.score)
    config = dataclasses.replace(best.config.postprocess, threshold=0.5)
    body_only = min(m.config.model.out_channels for m in members) < 2
    if body_only and config.method == "border":
        config = dataclasses.replace(config, method="auto")
    return config


def calibrate_combination(maps_per_image, truths, members: list[Member], method: str, quorum: int | None,
                          base: PostprocessConfig) -> tuple[PostprocessConfig, float]:
    """(post-processing, mean Kaggle score) tuned for one combination.

    maps_per_image: for each labelled image, every member's map (in member order).
    """
    thresholds = [m.threshold for m in members]
    combined = [combine([np.asarray(m, np.float32) for m in maps], thresholds, method, quorum) for maps in maps_per_image]
    return calibrate(combined, truths, base)


def greedy_selection(maps_per_image, truths, members: list[Member], method: str, quorum: int | None,
                     base: PostprocessConfig) -> tuple[list[int], PostprocessConfig, float, list[str]]:
    """Forward selection on labelled maps (Caruana et al., 2004): start from
    the member with the best validation score, then try the others in that
    order, keeping one only when the calibrated combination scores higher.

    Returns (chosen member indices, their post-processing, its score, one
    line per candidate saying what happened).
    """
    order = sorted(range(len(members)), key=lambda i: -members[i].score)

    def trial(indices):
        return calibrate_combination([[maps[i] for i in indices] for maps in maps_per_image], truths,
                                     [members[i] for i in indices], method, group_quorum(quorum, len(indices)), base)

    chosen = [order[0]]
    config, score = trial(chosen)
    log = [f"{members[order[0]].name}: alone {score:.4f}"]
    for index in order[1:]:
        candidate_config, candidate_score = trial(chosen + [index])
        kept = candidate_score > score
        log.append(f"{members[index].name}: {candidate_score:.4f} with it, {'kept' if kept else 'left out'}")
        if kept:
            chosen, config, score = chosen + [index], candidate_config, candidate_score
    return sorted(chosen, key=order.index), config, score, log
