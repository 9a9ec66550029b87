"""Checkpoints: a self-describing folder per epoch.

    <folder>/model/            orbax: params and batch statistics, as predicted
                               with (the moving average, when training averages)
    <folder>/training/         orbax: the weights training goes on from, when
                               they are not the model's (weight averaging)
    <folder>/optimizer/        orbax: optimizer state and step
    <folder>/checkpoint.json   the full config (with the calibrated
                               post-processing), epoch, step, validation metrics

A training run keeps them under <run>/checkpoints/epoch_NNNN/. Anything that
loads a model needs only the folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from nucjax.config import ExperimentConfig
from nucjax.metrics import paired_gain

CHECKPOINT_FILE = "checkpoint.json"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A folder that is not a usable checkpoint; the message says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int
    step: int
    metrics: dict
    config: ExperimentConfig

    @property
    def score(self) -> float:
        return float(self.metrics.get("score", float("-inf")))


def _saved_state(model, optimizer, training=None) -> dict:
    """The pure-dict trees saved, by subfolder; the optimizer and the training
    weights only when given."""
    state = {"model": nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))}
    if training is not None:
        state["training"] = nnx.to_pure_dict(nnx.state(training, (nnx.Param, nnx.BatchStat)))
    if optimizer is not None:
        state["optimizer"] = nnx.to_pure_dict(nnx.state(optimizer))
    return state


def save_checkpoint(folder: Path, model, optimizer, config: ExperimentConfig, epoch: int, step: int, metrics: dict,
                    training=None) -> CheckpointInfo:
    """Write a complete checkpoint into folder (replaced if it exists).

    model: what prediction loads; training: the weights training resumes
    from, when they differ (model is then their moving average).

    checkpoint.json is written last, after orbax has finished, so a folder
    without it is an interrupted save and is never loaded.
    """
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()  # orbax needs absolute paths
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    checkpointer = ocp.StandardCheckpointer()
    for name, tree in _saved_state(model, optimizer, training).items():
        checkpointer.save(folder / name, tree)
    checkpointer.wait_until_finished()
    checkpointer.close()
    record = {"format": FORMAT_VERSION, "epoch": epoch, "step": step, "metrics": metrics, "config": config.to_dict()}
    staging = folder / (CHECKPOINT_FILE + ".tmp")
    staging.write_text(json.dumps(record, indent=2, sort_keys=True))
    staging.rename(folder / CHECKPOINT_FILE)
    return CheckpointInfo(folder, epoch, step, metrics, config)


def read_checkpoint(folder: Path) -> CheckpointInfo:
    """The description of a checkpoint folder; CheckpointError when it is not one."""
    folder = Path(folder)
    record_path = folder / CHECKPOINT_FILE
    if not record_path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint (no {CHECKPOINT_FILE}; an interrupted save?)")
    try:
        record = json.loads(record_path.read_text())
        if record.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{folder}: checkpoint format {record.get('format')} is not {FORMAT_VERSION}; retrain or use a matching nucjax")
        config = ExperimentConfig.from_dict(record["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{record_path}: unreadable or incompatible config ({err})") from None
    return CheckpointInfo(folder.absolute(), int(record["epoch"]), int(record["step"]), record.get("metrics", {}), config)


def list_checkpoints(run: Path) -> list[CheckpointInfo]:
    """The complete checkpoints of a run folder, oldest first."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.glob("epoch_*")):
        try:
            found.append(read_checkpoint(folder))
        except CheckpointError:
            continue  # an interrupted save
    return sorted(found, key=lambda c: c.epoch)


def latest_checkpoint(run: Path) -> CheckpointInfo | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def choose_checkpoint(found: list[CheckpointInfo]) -> CheckpointInfo:
    """The checkpoint to predict with, of a run's (oldest first): the latest,
    which ends the planned schedule, unless earlier ones score better on
    the same validation images beyond their noise (metrics.paired_gain);
    then the best of those. A checkpoint chosen for a gain within the noise
    is chosen on the validation images' luck. Checkpoints that recorded no
    per-image scores (older nucjax) are compared by their mean."""
    latest = found[-1]
    reference = latest.metrics.get("image_scores")
    if not reference:
        return max(found, key=lambda c: (c.score, c.epoch))
    better = [c for c in found[:-1] if len(c.metrics.get("image_scores") or ()) == len(reference)
              and paired_gain(c.metrics["image_scores"], reference).significant]
    return max(better, key=lambda c: (c.score, c.epoch)) if better else latest


def best_checkpoint(run: Path) -> CheckpointInfo | None:
    """The run's checkpoint to predict with (choose_checkpoint), None when it has none."""
    found = list_checkpoints(run)
    return choose_checkpoint(found) if found else None


def prune_checkpoints(run: Path, max_to_keep: int) -> None:
    """Delete all but the latest max_to_keep checkpoints, the chosen one and
    the highest-scoring one (a later epoch may yet make it the chosen one)."""
    found = list_checkpoints(run)
    if not found:
        return
    kept = {choose_checkpoint(found).path, max(found, key=lambda c: (c.score, c.epoch)).path}
    for info in found[:-max_to_keep]:
        if info.path not in kept:
            shutil.rmtree(info.path, ignore_errors=True)


def resolve_checkpoint(path: Path) -> CheckpointInfo:
    """A checkpoint folder, or a training run folder (then its best checkpoint)."""
    path = Path(path)
    if (path / CHECKPOINT_FILE).is_file():
        return read_checkpoint(path)
    best = best_checkpoint(path)
    if best is None:
        raise CheckpointError(f"{path}: neither a checkpoint folder nor a training run with checkpoints")
    return best


def restore_into(info: CheckpointInfo, model, optimizer=None, training=None) -> None:
    """Load a checkpoint's state into a model (and optimizer, and the
    training weights) built from its config. A checkpoint saved without
    separate training weights gives training the model's.

    The target comes from the live objects, so orbax knows every shape.
    """
    if training is not None and not (info.path / "training").is_dir():
        restore_into(info, training, optimizer)
        nnx.update(model, nnx.state(training, (nnx.Param, nnx.BatchStat)))
        return
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    try:
        restored = {}
        for name, tree in _saved_state(model, optimizer, training).items():
            # Compare shapes first: a failed restore leaves orbax threads erroring.
            saved = _shapes(getattr(checkpointer.metadata(info.path / name), "item_metadata", None))
            wanted = _shapes(tree)
            if saved != wanted:
                first = next((k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)), "?")
                raise CheckpointError(
                    f"{info.path}: state does not fit its config ({name} {first}: saved {saved.get(first)}, "
                    f"config gives {wanted.get(first)}); a checkpoint of another version or model?"
                )
            restored[name] = checkpointer.restore(info.path / name, tree)
    except FileNotFoundError as err:
        raise CheckpointError(f"{info.path}: missing state ({err})") from None
    finally:
        checkpointer.close()
    model_state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    nnx.replace_by_pure_dict(model_state, restored["model"])
    nnx.update(model, model_state)
    if training is not None:
        training_state = nnx.state(training, (nnx.Param, nnx.BatchStat))
        nnx.replace_by_pure_dict(training_state, restored["training"])
        nnx.update(training, training_state)
    if optimizer is not None:
        optimizer_state = nnx.state(optimizer)
        nnx.replace_by_pure_dict(optimizer_state, restored["optimizer"])
        nnx.update(optimizer, optimizer_state)


def _shapes(tree) -> dict[str, tuple]:
    """{'a/b/c': shape} of a tree of arrays or orbax array metadata."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0] if tree is not None else []
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def load_model(path: Path):
    """(model in eval mode, CheckpointInfo) from a checkpoint or run folder."""
    from nucjax.models.unet import build_model

    info = resolve_checkpoint(path)
    model = build_model(info.config.model)
    restore_into(info, model)
    model.eval()
    return model, info
