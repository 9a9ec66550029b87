"""From images to model inputs: the channels each model reads, training
examples (the report's whole-image resize, or native-resolution crops),
and batches.

Inputs are float32 in 0..1, (H, W, C): the standard U-Net reads the
preprocessed grey image; the extended one also its adaptive threshold and
the raw RGB image (see models.unet.EXTENDED_ARMS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nucjax.augment import AugmentConfig, augment
from nucjax.preprocess import adaptive_threshold, preprocess, to_square
from nucjax.targets import targets

MODES = ("crop", "resize")


@dataclass(frozen=True)
class InputConfig:
    """How images meet the model. size: the side of the square the model is
    trained on. mode: 'resize' (the report's: the whole image squeezed to
    size x size) or 'crop' (random size x size crops at native resolution,
    whole-image inference). border: train a second, border channel."""

    size: int = 128
    mode: str = "crop"
    border: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown input mode '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.size < 8:
            raise ValueError(f"input size must be at least 8, got {self.size}")

    @property
    def out_channels(self) -> int:
        return 2 if self.border else 1


def model_inputs(image: np.ndarray, model: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, C) uint8 channels the model reads.

    uint8 keeps a whole dataset small in memory; divide by 255 for the model.
    """
    pre = preprocess(image)
    if model == "standard":
        return pre[..., None]
    return np.concatenate([pre[..., None], adaptive_threshold(pre)[..., None], image], axis=-1)


def reflect_pad(array: np.ndarray, height: int, width: int, top: int = 0, left: int = 0) -> np.ndarray:
    """Mirror the image outwards until it is at least (height, width), with
    `top` and `left` rows and columns added before it and the rest after."""
    bottom = max(height - array.shape[0] - top, 0)
    right = max(width - array.shape[1] - left, 0)
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def training_example(
    rng: np.random.Generator,
    inputs: np.ndarray,
    labels: np.ndarray,
    config: InputConfig,
    augment_config: AugmentConfig | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, C) float32 input and (size, size, K) target.

    inputs are a whole image's model_inputs (uint8), labels its instances.
    """
    size = config.size
    if config.mode == "resize":
        x, _ = to_square(inputs, size)
        y, _ = to_square(labels, size, nearest=True)
    else:
        # A crop may hang over the edge: reflect the image to fill it.
        x_full = reflect_pad(inputs, size, size)
        y_full = reflect_pad(labels, size, size)
        top = int(rng.integers(0, x_full.shape[0] - size + 1))
        left = int(rng.integers(0, x_full.shape[1] - size + 1))
        x = x_full[top : top + size, left : left + size]
        y = y_full[top : top + size, left : left + size]
    x = x.reshape(size, size, -1).astype(np.float32) / 255.0
    if augment_config is not None:
        x, y = augment(rng, x, y, augment_config)
    return x, targets(y, config.border)


def training_batches(seed: int, epoch: int, steps: int, batch_size: int, examples, config: InputConfig, augment_config):
    """Yield `steps` batches (x (B, S, S, C), y (B, S, S, K)) for one epoch.

    examples: a sequence of (model_inputs, labels). Images are drawn in a
    shuffled order seeded by (seed, epoch), so a resumed epoch replays.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(len(examples)) for _ in range(steps * batch_size // len(examples) + 1)])
    for step in range(steps):
        picks = order[step * batch_size : (step + 1) * batch_size]
        pairs = [training_example(rng, *examples[i], config, augment_config) for i in picks]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
