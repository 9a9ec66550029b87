"""A U-Net's shape, apart from the network (unet.py) so that reading a
config imports no JAX: commands' --help stays instant."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODELS = ("standard", "extended")
#: What follows each convolution before its ReLU. batch: the report's
#: batch norm, whose running statistics are the training set's; group:
#: group norm, statistics of each image's own feature maps, in training and
#: prediction alike (nothing learned about the training set's intensities
#: that an unseen experiment must match); none.
NORMS = ("batch", "group", "none")
#: Channels per group of group norm (fewer groups where a block is narrower).
GROUP_CHANNELS = 4
#: The widest input smoothing (px) accepted: a wider one blurs away nuclei of the canonical 16 px.
MAX_SMOOTH = 4.0
#: Channels of each arm of the extended U-Net, in the order of its input:
#: the preprocessed image, its adaptive threshold, the raw RGB image.
EXTENDED_ARMS = (1, 1, 3)


@dataclass(frozen=True)
class UNetConfig:
    """A U-Net's shape. Defaults are the report's: depth 4, filters 8-16-32-64,
    a 128 bottleneck."""

    model: str = "standard"
    depth: int = 4
    base_filters: int = 8
    norm: str = "batch"
    dropout: float = 0.0
    out_channels: int = 1
    #: Sigma (px) of a fixed Gaussian smoothing of the network's inputs, its first operation (0: none),
    #: so training, validation, prediction and the ONNX graph all see the same inputs. It takes away
    #: texture finer than a nucleus at the canonical scale (chromatin, speckle, a tissue's grain) that a
    #: longer run learns to read in the training experiments and then misreads in unseen ones.
    smooth: float = 0.0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model '{self.model}'; choose one of {', '.join(MODELS)}")
        if not 1 <= self.depth <= 7:
            raise ValueError(f"depth must be 1..7, got {self.depth}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm '{self.norm}'; choose one of {', '.join(NORMS)}")
        if self.base_filters < 1 or self.out_channels < 1:
            raise ValueError("base_filters and out_channels must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.smooth <= MAX_SMOOTH:
            raise ValueError(f"smooth must be in [0, {MAX_SMOOTH}] px, got {self.smooth}")

    @property
    def normalises(self) -> bool:
        """True when a norm (with its scale and shift) follows each convolution."""
        return self.norm != "none"

    @property
    def in_channels(self) -> int:
        return sum(EXTENDED_ARMS) if self.model == "extended" else 1

    @property
    def multiple(self) -> int:
        """Input sides must divide by this."""
        return 2**self.depth

    def check_input_size(self, height: int, width: int) -> None:
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"input {height}x{width} does not divide by 2**depth = {self.multiple}; "
                f"pick a size that is a multiple of {self.multiple}"
            )


def smoothing_taps(sigma: float) -> np.ndarray:
    """The 1-D Gaussian of UNetConfig.smooth: 2 * ceil(3 sigma) + 1 taps
    summing to 1 (applied along rows, then columns, over mirrored edges)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)
