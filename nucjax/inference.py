"""Whole-image prediction: probabilities at the original size, whatever
the input mode the model was trained in.

'resize' models see the image squeezed to their size and their output is
mapped back; 'crop' models see the image at native resolution, mirrored
at the edges and cut into overlapping tiles of a few fixed sizes (so
memory is bounded and each size compiles once), of which only the centres
are kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nucjax.inputs import InputConfig, reflect_pad
from nucjax.preprocess import from_square, to_square

#: Tile sides tried in turn; an image that fits none is cut into the last.
TILE_SIZES = (256, 384, 512)
#: Context (px) each tile has beyond the part of it that is kept.
TILE_MARGIN = 16


def tile_size(height: int, width: int, multiple: int) -> int:
    """The smallest tile that holds the whole image with its margins."""
    for size in TILE_SIZES:
        if max(height, width) + 2 * TILE_MARGIN <= size:
            return size
    return TILE_SIZES[-1] // multiple * multiple


def predict_tiled(forward, inputs: np.ndarray, multiple: int, batch: int = 4) -> np.ndarray:
    """Probabilities (H, W, K) of a native-resolution image (H, W, C) in 0..1.

    forward maps (B, T, T, C) float32 to (B, T, T, K) probabilities.
    """
    height, width = inputs.shape[:2]
    size = tile_size(height, width, multiple)
    keep = size - 2 * TILE_MARGIN
    rows, cols = -(-height // keep), -(-width // keep)
    canvas = reflect_pad(inputs, rows * keep + 2 * TILE_MARGIN, cols * keep + 2 * TILE_MARGIN, TILE_MARGIN, TILE_MARGIN)
    corners = [(r * keep, c * keep) for r in range(rows) for c in range(cols)]
    out = None
    for start in range(0, len(corners), batch):
        chunk = corners[start : start + batch]
        tiles = np.zeros((batch, size, size, inputs.shape[2]), np.float32)  # a fixed batch: one compile
        for i, (y, x) in enumerate(chunk):
            tiles[i] = canvas[y : y + size, x : x + size]
        probs = np.asarray(forward(tiles))
        if out is None:
            out = np.zeros((rows * keep, cols * keep, probs.shape[-1]), np.float32)
        for i, (y, x) in enumerate(chunk):
            out[y : y + keep, x : x + keep] = probs[i, TILE_MARGIN : TILE_MARGIN + keep, TILE_MARGIN : TILE_MARGIN + keep]
    return out[:height, :width]


def predict_image(forward, inputs: np.ndarray, config: InputConfig, multiple: int) -> np.ndarray:
    """Probabilities (H, W, K) for one image's model inputs (H, W, C) uint8."""
    x = inputs.astype(np.float32) / 255.0
    if config.mode == "resize":
        square, geometry = to_square(x, config.size)
        probs = np.asarray(forward(square.reshape(1, config.size, config.size, -1)))[0]
        return from_square(probs, geometry).reshape(inputs.shape[:2] + (probs.shape[-1],))
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
