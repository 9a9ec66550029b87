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

from nucjax.augment import AugmentConfig, augment, recolour
from nucjax.preprocess import NORMALISATIONS, PREPROCESSING, adaptive_threshold, nucleus_channel, to_square
from nucjax.scale import resize_image, resize_labels, scale_to
from nucjax.targets import targets

MODES = ("crop", "resize")


@dataclass(frozen=True)
class InputConfig:
    """How images meet the model. size: the side of the square the model is
    trained on. mode: 'resize' (the report's: the whole image squeezed to
    size x size) or 'crop' (random size x size crops at native resolution,
    whole-image inference). border: train a second, border channel.
    preprocessing, normalisation: how the nucleus channel is made (see
    preprocess.nucleus_channel). diameter: crop mode only; when positive,
    every training image is rescaled so its median nucleus is this many
    px across, or keep theirs when smaller (see nucjax.scale), times a
    random factor within 1 +- scale_jitter, log-uniform; prediction does the
    same. 0 keeps native resolution."""

    size: int = 128
    mode: str = "crop"
    border: bool = True
    preprocessing: str = "stain"
    normalisation: str = "percentile"
    diameter: float = 20.0
    scale_jitter: float = 0.25

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown input mode '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.size < 8:
            raise ValueError(f"input size must be at least 8, got {self.size}")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing '{self.preprocessing}'; choose one of {', '.join(PREPROCESSING)}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation '{self.normalisation}'; choose one of {', '.join(NORMALISATIONS)}")
        if self.diameter < 0 or not 0 <= self.scale_jitter < 1:
            raise ValueError(f"diameter must be >= 0 and scale_jitter in [0, 1), got {self.diameter} and {self.scale_jitter}")

    @property
    def rescales(self) -> bool:
        """True when the model was trained at a canonical nucleus diameter."""
        return self.mode == "crop" and self.diameter > 0

    @property
    def out_channels(self) -> int:
        return 2 if self.border else 1


def model_inputs(image: np.ndarray, model: str, config: InputConfig | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, C) uint8 channels the model reads.

    uint8 keeps a whole dataset small in memory; divide by 255 for the model.
    Without config, the nucleus channel is the report's preprocessing.
    """
    if config is None:
        pre = nucleus_channel(image)
    else:
        pre = nucleus_channel(image, config.preprocessing, config.normalisation)
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
    diameter: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, C) float32 input and (size, size, K) target.

    inputs are a whole image's model_inputs (uint8), labels its instances,
    diameter its median nucleus diameter (see scale.median_diameter).
    """
    size = config.size
    if config.mode == "resize":
        x, _ = to_square(inputs, size)
        y, _ = to_square(labels, size, nearest=True)
    else:
        window = size
        if config.rescales:
            spread = -np.log(1 - config.scale_jitter)
            jitter = float(np.exp(rng.uniform(-spread, spread))) if spread > 0 else 1.0
            window = max(8, round(size / (scale_to(diameter, config.diameter) * jitter)))
        # A crop may hang over the edge: reflect the image to fill it.
        x_full = reflect_pad(inputs, window, window)
        y_full = reflect_pad(labels, window, window)
        top = int(rng.integers(0, x_full.shape[0] - window + 1))
        left = int(rng.integers(0, x_full.shape[1] - window + 1))
        x = x_full[top : top + window, left : left + window]
        y = y_full[top : top + window, left : left + window]
        if window != size:  # the window is the crop at the canonical scale
            x, y = resize_image(x, (size, size)), resize_labels(y, (size, size))
    x = x.reshape(size, size, -1).astype(np.float32) / 255.0
    if augment_config is not None:
        x, y = augment(rng, x, y, augment_config)
    return x, targets(y, config.border)


def training_batches(seed: int, epoch: int, steps: int, batch_size: int, examples, config: InputConfig, augment_config):
    """Yield `steps` batches (x (B, S, S, C), y (B, S, S, K)) for one epoch.

    examples: a sequence of (model_inputs, labels, median diameter), where
    model_inputs may be a list of variants of the image (recoloured copies)
    of which each step takes one at random. Images are drawn in a shuffled
    order seeded by (seed, epoch), so a resumed epoch replays.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(len(examples)) for _ in range(steps * batch_size // len(examples) + 1)])
    for step in range(steps):
        picks = order[step * batch_size : (step + 1) * batch_size]
        pairs = [training_example(rng, _variant(rng, examples[i][0]), examples[i][1], config, augment_config,
                                  examples[i][2] if len(examples[i]) > 2 else None) for i in picks]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _variant(rng: np.random.Generator, inputs):
    """One of an image's input variants (the image itself when there is one)."""
    if isinstance(inputs, np.ndarray):
        return inputs
    return inputs[int(rng.integers(len(inputs)))] if len(inputs) > 1 else inputs[0]


def training_examples(samples, model: str, config: InputConfig, augment_config: AugmentConfig | None = None, seed: int = 0):
    """(inputs variants, labels, median diameter) of each labelled sample.

    With augment_config.recolour > 0, an image gets, with that probability,
    a recoloured copy (see augment.recolour) beside itself; each training
    step then picks one of the two. Inputs are computed on whole images,
    as at prediction, so normalisation sees what it will see then.
    """
    from nucjax.scale import median_diameter

    rng = np.random.default_rng([seed, 7])
    examples = []
    for sample in samples:
        variants = [model_inputs(sample.image, model, config)]
        if augment_config is not None and augment_config.recolour and rng.random() < augment_config.recolour:
            variants.append(model_inputs(recolour(rng, sample.image), model, config))
        examples.append((variants, sample.labels, median_diameter(sample.labels)))
    return examples
