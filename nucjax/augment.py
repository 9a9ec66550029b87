"""Augmentation: its settings, the 8 symmetries of the square, and
recolouring.

The per-step augmentation (crop and scale jitter, symmetries, elastic
warp, intensity jitter, blur and grain) runs on the device inside the train step
(nucjax.batches), drawn from AugmentConfig; geometry moves the input and
the labels together and the targets are built from the moved labels, so
they stay exact. Recolouring is done once per training set, on the host
(recolour): each recoloured copy is a variant of its image that the
batches choose between. The numpy symmetries here are the reference the
device's follow, and test-time augmentation's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True  # flips and 90-degree rotations: the 8 symmetries
    elastic: float = 0.3  # probability of an elastic deformation
    elastic_alpha: float = 8.0  # the largest displacement (px) of a warp
    elastic_sigma: float = 6.0  # smoothness (px) of the displacement
    brightness: float = 0.1  # the input moves by up to +-this (on 0..1)
    contrast: float = 0.15  # and is scaled by 1 +- this
    blur: float = 0.0  # probability of a Gaussian blur (out-of-focus and soft-stained images)
    blur_sigma: float = 2.0  # its largest sigma (px); each blurred image draws one in 0.5..this
    # Dim nuclei: the input is raised to a power log-uniform in exp(+-gamma),
    # which moves dim nuclei against bright ones; and each nucleus is, with
    # probability pale, faded towards its crop's background to a share of
    # its contrast drawn in pale_floor..1 (pale nuclei a model must not miss).
    gamma: float = 0.0
    pale: float = 0.0
    pale_floor: float = 0.25
    # Grain: with probability noise, a crop gets Gaussian pixel noise (the same in
    # every channel) of a standard deviation drawn in 0..noise_sigma (on 0..1), so
    # fine texture inside a nucleus is not what finds it.
    noise: float = 0.0
    noise_sigma: float = 0.1
    recolour: float = 0.5  # probability that an image also trains in a recoloured copy (see recolour)

    def __post_init__(self):
        for name in ("elastic", "blur", "recolour", "pale", "noise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability, in [0, 1]; got {getattr(self, name)}")
        if self.gamma < 0 or not 0 <= self.pale_floor <= 1:
            raise ValueError(f"gamma must be >= 0 and pale_floor in [0, 1], got {self.gamma} and {self.pale_floor}")
        if self.noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {self.noise_sigma}")


def symmetry(array: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of the square (k in 0..7): k % 4
    quarter turns, then a left-right flip when k >= 4."""
    out = np.rot90(array, k % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def inverse_symmetry(array: np.ndarray, k: int) -> np.ndarray:
    """Undo symmetry(., k)."""
    out = array[:, ::-1] if k >= 4 else array
    return np.ascontiguousarray(np.rot90(out, -(k % 4), axes=(0, 1)))


#: Recolourings of a colour image, and of a grey one (see recolour).
COLOUR_RECOLOURINGS = ("stain_jitter", "channel_shuffle", "grey")
GREY_RECOLOURINGS = ("inversion", "tint")


def recolour(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A recoloured copy of an (H, W, 3) uint8 RGB image, so that no colour
    is new at test time. A colour image gets one of: stain jitter (each of
    haematoxylin, eosin and DAB densities scaled by 1 +- 0.3 and shifted),
    a shuffle of its channels, or grey; a grey image is inverted, or made
    dark-on-light and tinted with a random stain-like colour (so its nuclei
    carry the most stain, as on a stained slide)."""
    from nucjax.preprocess import is_colour, to_grey

    image = np.ascontiguousarray(image[..., :3])
    if is_colour(image):
        kind = COLOUR_RECOLOURINGS[int(rng.integers(len(COLOUR_RECOLOURINGS)))]
        if kind == "channel_shuffle":  # one of the five orders that are not the image's own
            order = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)][int(rng.integers(5))]
            return np.ascontiguousarray(image[..., order])
        if kind == "grey":
            return np.repeat(to_grey(image)[..., None], 3, axis=2)
        from skimage.color import hed2rgb, rgb2hed

        densities = rgb2hed(image) * rng.uniform(0.7, 1.3, 3) + rng.uniform(-0.02, 0.02, 3)
        return np.clip(np.rint(hed2rgb(densities) * 255), 0, 255).astype(np.uint8)
    kind = GREY_RECOLOURINGS[int(rng.integers(len(GREY_RECOLOURINGS)))]
    if kind == "inversion":
        return 255 - image
    # A stained slide has dark nuclei on a light ground: a fluorescence image
    # is inverted first, or its tinted nuclei would read as little stain.
    light = image if to_grey(image).mean() > 127 else 255 - image
    tint = rng.uniform(0.35, 1.0, 3)  # each channel keeps a share: purples, browns, pinks
    return np.clip(np.rint(light * tint), 0, 255).astype(np.uint8)
