"""Whole-image prediction: probabilities at the original size, whatever
the input mode the model was trained in.

'resize' models see the image squeezed to their size and their output is
mapped back. 'crop' models see the image at native resolution, mirrored
outwards by a margin (so edge nuclei have context) and up to a multiple of
32: whole when that is at most WHOLE_PIXELS, so each image size compiles
once and nothing is computed twice; in overlapping tiles of TILE pixels
otherwise, keeping only their centres, so memory stays bounded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nucjax.augment import inverse_symmetry, symmetry
from nucjax.inputs import InputConfig, reflect_pad
from nucjax.preprocess import from_square, to_square

#: Context (px) mirrored around the image, and kept around each tile's centre.
MARGIN = 16
#: Images up to this many pixels (with margins) are predicted whole.
WHOLE_PIXELS = 1600 * 1600
#: The side of a tile, for larger images.
TILE = 512


def padded_side(side: int, multiple: int) -> int:
    """The side with its margins, rounded up to a multiple of max(32, multiple)."""
    step = max(32, multiple)
    return -(-(side + 2 * MARGIN) // step) * step


def predict_tiled(forward, inputs: np.ndarray, multiple: int, tile: int = TILE, whole_pixels: int = WHOLE_PIXELS) -> np.ndarray:
    """Probabilities (H, W, K) of a native-resolution image (H, W, C) in 0..1.

    forward maps (B, h, w, C) float32 to (B, h, w, K) probabilities.
    """
    height, width = inputs.shape[:2]
    padded_h, padded_w = padded_side(height, multiple), padded_side(width, multiple)
    if padded_h * padded_w <= whole_pixels:
        canvas = reflect_pad(inputs, padded_h, padded_w, MARGIN, MARGIN)
        probs = np.asarray(forward(canvas[None].astype(np.float32)))[0]
        return probs[MARGIN : MARGIN + height, MARGIN : MARGIN + width]
    tile = tile // multiple * multiple
    keep = tile - 2 * MARGIN
    rows, cols = -(-height // keep), -(-width // keep)
    canvas = reflect_pad(inputs, rows * keep + 2 * MARGIN, cols * keep + 2 * MARGIN, MARGIN, MARGIN)
    out = None
    for y in range(0, rows * keep, keep):
        for x in range(0, cols * keep, keep):
            probs = np.asarray(forward(canvas[None, y : y + tile, x : x + tile].astype(np.float32)))[0]
            if out is None:
                out = np.zeros((rows * keep, cols * keep, probs.shape[-1]), np.float32)
            out[y : y + keep, x : x + keep] = probs[MARGIN : MARGIN + keep, MARGIN : MARGIN + keep]
    return out[:height, :width]


def predict_image(forward, inputs: np.ndarray, config: InputConfig, multiple: int, tta: bool = False) -> np.ndarray:
    """Probabilities (H, W, K) for one image's model inputs (H, W, C) uint8.

    tta: average over the 8 flips and quarter turns, each mapped back
    exactly, so a model that commutes with them gives the plain map.
    """
    x = inputs.astype(np.float32) / 255.0
    if not tta:
        return _predict_once(forward, x, config, multiple)
    total = None
    for k in range(8):
        probs = inverse_symmetry(_predict_once(forward, symmetry(x, k), config, multiple), k)
        total = probs if total is None else total + probs
    return total / 8


def _predict_once(forward, x: np.ndarray, config: InputConfig, multiple: int) -> np.ndarray:
    if config.mode == "resize":
        square, geometry = to_square(x, config.size)
        probs = np.asarray(forward(square.reshape(1, config.size, config.size, -1)))[0]
        return from_square(probs, geometry).reshape(x.shape[:2] + (probs.shape[-1],))
    return predict_tiled(forward, x, multiple)


class Predictor:
    """Probabilities from a model's current state, jitted once per input shape.

    The graph is taken in eval mode (batch norm uses running statistics);
    call with the live model's state, so training and prediction share it.
    """

    def __init__(self, model):
        model.eval()
        self.graphdef, _ = nnx.split(model)
        model.train()
        self._forward = jax.jit(lambda state, x: jax.nn.sigmoid(nnx.merge(self.graphdef, state)(x)))

    def bind(self, model):
        """A function (B, H, W, C) -> (B, H, W, K) probabilities for this model's state."""
        state = nnx.state(model)
        return lambda x: np.asarray(self._forward(state, jnp.asarray(x)))
