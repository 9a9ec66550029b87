"""The experiment configuration: one frozen dataclass per stage, gathered in
ExperimentConfig, which every checkpoint stores as JSON.

The defaults are the settings that trained best on a 2-core CPU: a base-16
U-Net on 128 x 128 crops of images rescaled to a canonical nucleus
diameter, stain-aware input, body + border targets, BCE + Dice, adam with
warm-up and cosine decay, validated on a split that holds out whole
experiments.

Flat parameters (the search's trial keys and nucjax.train's flags) map to
sections through from_params, the one translation; their defaults are the
dataclasses' own (default_params).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from nucjax.augment import AugmentConfig
from nucjax.data.split import SPLITS, split_samples
from nucjax.inputs import InputConfig
from nucjax.models.unet_config import UNetConfig
from nucjax.postprocess import PostprocessConfig

SCHEDULES = ("cosine", "constant", "step")
LOSSES = ("bce_dice", "bce")
#: Where training batches come from (nucjax.batches): the whole set on the
#: device, each step's images sent to it, or the first while it fits.
PIPELINES = ("auto", "resident", "streaming")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    steps_per_epoch: int = 200
    batch_size: int = 8
    learning_rate: float = 2e-3
    # 'constant' (no warm-up); 'cosine' warms up, then anneals to 1%; 'step' divides by 10
    # at 1/2 and 3/4 of training. Constant, with the weight averaging, holds the held-out
    # experiments that every annealed run lost as its learning rate fell (docs/benchmarks.md).
    schedule: str = "constant"
    warmup_steps: int = 100
    loss: str = "bce_dice"
    channel_weights: tuple[float, ...] = (1.0, 1.0)  # body, border
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.0  # held back from training and validation (a search's test images)
    split: str = "group"  # 'group' holds out whole experiments; 'stratified' samples every kind
    # Group k-fold (folds >= 2): validate on fold `fold`'s acquisition groups, train on the
    # others' (nucjax.data.split.fold_split); 0: the split above.
    folds: int = 0
    fold: int = 0
    max_to_keep: int = 2  # latest checkpoints kept, besides the best
    divergence_factor: float = 20.0  # a loss this many times its minimum has diverged
    pipeline: str = "auto"  # see PIPELINES
    precision: str = "float32"  # 'bfloat16': mixed precision (float32 parameters, optimizer and loss), for GPUs
    # Weight averaging: validation, checkpoints and prediction use an exponential
    # moving average of the weights (and batch-norm statistics) with this decay;
    # 0 uses the weights as the last step left them.
    ema_decay: float = 0.999
    # Training images are drawn with probability (their acquisition group's size)
    # ** -balance: 0 draws every image alike, 1 every group alike. Off: 0.5 moved
    # score between groups but not overall (docs/benchmarks.md).
    balance: float = 0.0
    # Decoupled (AdamW) weight decay of the convolution kernels; 0: plain adam.
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss '{self.loss}'; choose one of {', '.join(LOSSES)}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.max_to_keep) < 1:
            raise ValueError("epochs, steps_per_epoch, batch_size and max_to_keep must be at least 1")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split '{self.split}'; choose one of {', '.join(SPLITS)}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline '{self.pipeline}'; choose one of {', '.join(PIPELINES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if not 0 <= self.balance <= 1:
            raise ValueError(f"balance must be in [0, 1], got {self.balance}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.folds == 1 or self.folds < 0 or not 0 <= self.fold < max(self.folds, 1):
            raise ValueError(f"folds must be 0 (no k-fold) or at least 2, and fold in [0, folds); got fold {self.fold} of {self.folds}")
        if self.folds and self.split != "group":
            raise ValueError(f"k-fold holds out acquisition groups: it needs split 'group', not '{self.split}'")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def split_samples(self, samples) -> tuple[list, list, list]:
        """(train, val, test) samples as this run split them: the one place
        training, nucjax.predict --split and ensemble calibration make it."""
        return split_samples(samples, self.val_fraction, self.test_fraction, seed=self.seed, method=self.split,
                             folds=self.folds, fold=self.fold)


@dataclass(frozen=True)
class Validation:
    """What an epoch is validated on: positions in the validation samples
    (none: the epoch is not validated, saved or reported) and whether at the
    nucleus scale the masks give (no first pass: the cheaper, steadier
    proxy a search ranks its early rungs by; not what prediction gives)."""

    images: tuple[int, ...]
    at_true_scale: bool = False


def as_validation(chosen) -> Validation:
    """A Validation, or positions validated as prediction would (a list, a range)."""
    return chosen if isinstance(chosen, Validation) else Validation(tuple(chosen))


@dataclass(frozen=True)
class ExperimentConfig:
    # Inputs smoothed by 1 px: the held-out large-nucleus experiments peak higher and hold longer (docs/benchmarks.md).
    model: UNetConfig = field(default_factory=lambda: UNetConfig(base_filters=16, out_channels=2, smooth=1.0))
    inputs: InputConfig = field(default_factory=InputConfig)
    # Grain on half the crops: the held-out large-nucleus experiments hold to the end of a run (docs/benchmarks.md).
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(noise=0.5, noise_sigma=0.2))
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def __post_init__(self):
        if self.model.out_channels != self.inputs.out_channels:
            raise ValueError(
                f"the model has {self.model.out_channels} output channels but the targets have "
                f"{self.inputs.out_channels} (border {'on' if self.inputs.border else 'off'})"
            )
        if self.inputs.size % self.model.multiple:
            raise ValueError(
                f"input size {self.inputs.size} does not divide by 2**depth = {self.model.multiple}; "
                f"use a multiple of {self.model.multiple}"
            )
        if len(self.train.channel_weights) < self.model.out_channels:
            raise ValueError(f"channel_weights needs {self.model.out_channels} values, got {self.train.channel_weights}")

    def replace(self, **sections) -> "ExperimentConfig":
        """A copy with some sections' fields changed: replace(train={'epochs': 3})."""
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, **changed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"unknown config sections: {', '.join(sorted(unknown))}")
        kwargs = {}
        for name, value in data.items():
            section_type = SECTIONS[name]
            value = {**LEGACY.get(name, {}), **value}
            if name == "model" and "batch_norm" in value:  # written before the norm had a choice
                value["norm"] = "batch" if value.pop("batch_norm") else "none"
            known = {f.name for f in dataclasses.fields(section_type)}
            bad = set(value) - known
            if bad:
                raise ValueError(f"unknown {name} settings: {', '.join(sorted(bad))}")
            # JSON has no tuples: give tuple fields their type back.
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            kwargs[name] = section_type(**value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        return cls.from_dict(json.loads(text))


SECTIONS = {"model": UNetConfig, "inputs": InputConfig, "augment": AugmentConfig,
            "train": TrainConfig, "postprocess": PostprocessConfig}

#: What a checkpoint written before a field existed meant by leaving it
#: out: unsmoothed inputs, native scale, the report's preprocessing, no
#: recolouring, the stratified split. Its stored config then reads as it trained.
LEGACY = {
    "model": {"smooth": 0.0},
    "inputs": {"preprocessing": "reference", "normalisation": "minmax", "diameter": 0.0, "scale_jitter": 0.0},
    "augment": {"recolour": 0.0, "blur": 0.0, "noise": 0.0},
    "train": {"split": "stratified", "ema_decay": 0.0, "balance": 0.0},
}

#: Flat keys computed into more than one field (see from_params).
DERIVED = ("border", "border_weight")


def flat_keys() -> dict[str, tuple[str, str]]:
    """{flat key: (section, field)} for every settable field."""
    keys = {}
    for section, section_type in SECTIONS.items():
        for f in dataclasses.fields(section_type):
            if f.name in ("out_channels", "channel_weights", "method", "border"):
                continue  # set through 'border', 'border_weight' and 'postprocess'
            if f.name == "by_kind":
                continue  # calibration's to set
            if section == "postprocess" and f.name in keys:
                continue
            keys[f.name] = (section, f.name)
    keys["postprocess"] = ("postprocess", "method")
    return keys


def default_params() -> dict:
    """The flat defaults: ExperimentConfig()'s, as from_params reads them."""
    return to_params(ExperimentConfig())


def check_params(params) -> None:
    """Refuse keys from_params does not know, naming them and the known ones."""
    known = set(flat_keys()) | set(DERIVED)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")


def from_params(params: dict) -> ExperimentConfig:
    """The ExperimentConfig of flat settings (a search trial's, or
    nucjax.train's flags); keys left out keep ExperimentConfig()'s value.

    border (bool) sets the border target and the model's output channels;
    border_weight the border channel's loss weight; postprocess the
    post-processing method. Unknown keys raise ValueError.
    """
    check_params(params)
    keys = flat_keys()
    sections: dict[str, dict] = {}
    for key, value in params.items():
        if key in keys:
            section, name = keys[key]
            sections.setdefault(section, {})[name] = value
    border = bool(params.get("border", ExperimentConfig().inputs.border))
    sections.setdefault("inputs", {})["border"] = border
    sections.setdefault("model", {})["out_channels"] = 2 if border else 1
    if "border_weight" in params:
        sections.setdefault("train", {})["channel_weights"] = (1.0, float(params["border_weight"]))
    return ExperimentConfig().replace(**sections)


def to_params(config: ExperimentConfig) -> dict:
    """The flat settings of a config, as from_params reads them back:
    from_params(to_params(c)) == c, up to the calibrated thresholds per kind
    (calibration's to set again). What a refit starts a trial from."""
    params = {key: getattr(getattr(config, section), name) for key, (section, name) in flat_keys().items()}
    params["border"] = config.inputs.border
    if config.inputs.border:
        params["border_weight"] = config.train.channel_weights[1]
    return params
