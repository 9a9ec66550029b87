"""From images to model inputs: the channels each model reads, and the
training examples (each image resized once: the report's whole-image
squeeze, or to the canonical nucleus diameter for crops), from which
nucjax.batches draws the batches on the device.

Inputs are float32 in 0..1, (H, W, C): the standard U-Net reads the
preprocessed grey image; the extended one also its adaptive threshold and
the raw RGB image (see models.unet.EXTENDED_ARMS).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nucjax.augment import AugmentConfig, recolour
from nucjax.preprocess import NORMALISATIONS, PREPROCESSING, adaptive_threshold, nucleus_channel, to_square
from nucjax.scale import resize_image, resize_labels, scale_to, scaled_shape

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
    diameter: float = 16.0
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


@dataclass(frozen=True)
class Example:
    """One training image at the scale the model trains on: its input
    variants ((h, w, C) uint8 each: the image, and any recoloured copy)
    and its (h, w) int32 labels."""

    variants: tuple
    labels: np.ndarray


def training_scale(labels: np.ndarray, config: InputConfig) -> float:
    """The factor an image is resized by once for training: to the
    canonical nucleus diameter when the config rescales, else 1."""
    from nucjax.scale import median_diameter

    return scale_to(median_diameter(labels), config.diameter) if config.rescales else 1.0


def at_training_scale(inputs: np.ndarray, labels: np.ndarray, config: InputConfig, scale: float):
    """(inputs, labels) as training crops are cut from them: the whole image
    squeezed to size x size in resize mode, else resized by scale."""
    if config.mode == "resize":
        x, _ = to_square(inputs, config.size)
        y, _ = to_square(labels, config.size, nearest=True)
        return x.reshape(config.size, config.size, -1), y.astype(np.int32)
    hw = scaled_shape(labels.shape, scale)
    return resize_image(inputs, hw).reshape(*hw, -1), resize_labels(labels, hw)


def training_examples(samples, model: str, config: InputConfig, augment_config: AugmentConfig | None = None,
                      seed: int = 0) -> list[Example]:
    """The Example of each labelled sample, resized once (see
    at_training_scale); the batches are drawn from them on the device
    (nucjax.batches).

    With augment_config.recolour > 0, an image gets, with that probability,
    a recoloured copy (see augment.recolour) beside itself; each training
    crop then comes from one of the two. Inputs are computed on whole
    images at their own size, as at prediction, so normalisation sees what
    it will see then.
    """
    rng = np.random.default_rng([seed, 7])
    examples = []
    for sample in samples:
        images = [sample.image]
        if augment_config is not None and augment_config.recolour and rng.random() < augment_config.recolour:
            images.append(recolour(rng, sample.image))
        scale = training_scale(sample.labels, config)
        pairs = [at_training_scale(model_inputs(image, model, config), sample.labels, config, scale) for image in images]
        examples.append(Example(tuple(x for x, _ in pairs), pairs[0][1]))
    return examples


def examples_key(samples, model: str, config: InputConfig, augment_config: AugmentConfig | None, seed: int) -> str:
    """What training_examples' result depends on, as a digest: the images
    (ids and shapes), the model's inputs, recolouring and the seed."""
    recolour_p = augment_config.recolour if augment_config is not None else 0.0
    digest = hashlib.sha256(repr((model, sorted(asdict(config).items()), recolour_p, seed)).encode())
    for sample in samples:
        digest.update(repr((sample.image_id, sample.image.shape, sample.labels.shape)).encode())
    return digest.hexdigest()[:24]


def cached_training_examples(folder: Path, samples, model: str, config: InputConfig,
                             augment_config: AugmentConfig | None = None, seed: int = 0) -> list[Example]:
    """training_examples, kept in folder (one .npz per examples_key): every
    restart of a paused search trial, and every trial with the same inputs,
    reads them instead of preparing each image again."""
    samples = list(samples)
    path = Path(folder) / f"examples-{examples_key(samples, model, config, augment_config, seed)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                counts = stored["counts"]
                return [Example(tuple(stored[f"x{i}_{k}"] for k in range(c)), stored[f"y{i}"].astype(np.int32))
                        for i, c in enumerate(counts)]
        except (OSError, KeyError, ValueError):
            pass  # unreadable (a torn copy, an older layout): made again below
    examples = training_examples(samples, model, config, augment_config, seed)
    arrays = {"counts": np.array([len(e.variants) for e in examples], np.int32)}
    for i, example in enumerate(examples):
        # Labels as uint16 where they fit (nearly always): a third of the file, read back as int32.
        arrays[f"y{i}"] = example.labels.astype(np.uint16) if example.labels.max(initial=0) < 2**16 else example.labels
        arrays.update({f"x{i}_{k}": variant for k, variant in enumerate(example.variants)})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and moved into place: trials preparing the same examples at once never read half a file.
    handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(handle, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, path)
    return examples
