"""The experiment configuration: one frozen dataclass per stage, gathered in
ExperimentConfig, which every checkpoint stores as JSON.

The defaults are the settings that trained best on a 2-core CPU: a base-16
U-Net on 128 x 128 native-resolution crops, body + border targets,
BCE + Dice, adam with warm-up and cosine decay.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from nucjax.augment import AugmentConfig
from nucjax.inputs import InputConfig
from nucjax.models.unet import UNetConfig
from nucjax.postprocess import PostprocessConfig

SCHEDULES = ("cosine", "constant", "step")
LOSSES = ("bce_dice", "bce")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    steps_per_epoch: int = 200
    batch_size: int = 8
    learning_rate: float = 2e-3
    schedule: str = "cosine"  # 'step' divides by 10 at 1/2 and 3/4 of training
    warmup_steps: int = 100
    loss: str = "bce_dice"
    channel_weights: tuple[float, ...] = (1.0, 1.0)  # body, border
    seed: int = 0
    val_fraction: float = 0.15
    max_to_keep: int = 2  # latest checkpoints kept, besides the best
    divergence_factor: float = 20.0  # a loss this many times its minimum has diverged

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss '{self.loss}'; choose one of {', '.join(LOSSES)}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.max_to_keep) < 1:
            raise ValueError("epochs, steps_per_epoch, batch_size and max_to_keep must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class ExperimentConfig:
    model: UNetConfig = field(default_factory=lambda: UNetConfig(base_filters=16, out_channels=2))
    inputs: InputConfig = field(default_factory=InputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
            section_type = {"model": UNetConfig, "inputs": InputConfig, "augment": AugmentConfig,
                            "train": TrainConfig, "postprocess": PostprocessConfig}[name]
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
