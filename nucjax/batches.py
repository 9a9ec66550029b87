"""Training batches made on the device, inside the jitted train step.

The training set goes to the device once, as a TrainingSet: every image's
input variants (itself and any recoloured copy) and labels, already at the
scale the model trains on (inputs.training_examples), packed into a few
planes. Each step then draws its batch from a PRNG key (make_batch): which
variant, the crop (position, and the scale jitter), one of the 8
symmetries, an elastic deformation, intensity jitter, and the body +
border targets of the moved labels (nucjax.targets). Crop, rescale,
symmetry and warp are one map from output pixels to image coordinates,
sampled once (linearly for the input, nearest for the labels), mirrored
past the image's edge, so no black borders appear.

When the packed set would take more than a share of the device's memory,
streamed_sets sends each step only its batch's images (padded to one
shape, prepared and sent a step ahead on a thread); make_batch draws the
same batch from them for the same key.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.augment import AugmentConfig
from nucjax.config import PIPELINES
from nucjax.inputs import Example, InputConfig
from nucjax.targets import targets

#: Packing planes are at least this many px on a side (larger when an
#: image is): small enough that flat indices stay within int32.
PLANE_SIDE = 4096
#: 'auto' keeps the set resident while it takes at most this share of the device's memory.
RESIDENT_SHARE = 0.4


class TrainingSet(NamedTuple):
    """A packed training set (numpy on the host, jax arrays on the device).

    inputs: (P, H, W, C) uint8 planes holding every input variant;
    labels: (Q, H', W') uint16 (int32 past 65535 nuclei) planes of labels;
    variants: (V, 3) int32, each variant's (plane, top, left);
    examples: (N, 7) int32, each image's (labels plane, top, left, height,
    width, first variant, number of variants)."""

    inputs: np.ndarray | jax.Array
    labels: np.ndarray | jax.Array
    variants: np.ndarray | jax.Array
    examples: np.ndarray | jax.Array

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self))


def shelf_layout(shapes, side: int = PLANE_SIDE):
    """Place boxes of (h, w) on planes, tallest first, in rows (shelves).

    Returns ((n, 3) int32 (plane, top, left), number of planes, (H, W) of a plane)."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    width = max(side, int(shapes[:, 1].max()))
    height = max(side, int(shapes[:, 0].max()))
    positions = np.zeros((len(shapes), 3), np.int32)
    plane = top = left = shelf = 0
    used_h = used_w = 0
    for i in np.argsort(-shapes[:, 0], kind="stable"):
        h, w = shapes[i]
        if left + w > width:  # next shelf
            top, left, shelf = top + shelf, 0, 0
        if top + h > height:  # next plane
            plane, top, left, shelf = plane + 1, 0, 0, 0
        positions[i] = (plane, top, left)
        left, shelf = left + w, max(shelf, h)
        used_h, used_w = max(used_h, top + h), max(used_w, left)
    return positions, plane + 1, (used_h, used_w)


def _planes(arrays, positions, count: int, plane_hw, dtype) -> np.ndarray:
    trailing = arrays[0].shape[2:]
    planes = np.zeros((count, *plane_hw, *trailing), dtype)
    for array, (p, top, left) in zip(arrays, positions):
        planes[p, top : top + array.shape[0], left : left + array.shape[1]] = array
    return planes


def label_dtype(examples) -> np.dtype:
    return np.dtype(np.uint16) if max(int(e.labels.max(initial=0)) for e in examples) < 2**16 else np.dtype(np.int32)


def pack(examples: list[Example], plane_hw=None, variant_slots: int | None = None, dtype=None) -> TrainingSet:
    """Pack examples into a TrainingSet (numpy).

    By default images are shelf-packed (the resident set). With plane_hw,
    every image gets its own plane of that shape and every image
    variant_slots variant planes (streamed batches: one shape for all)."""
    shapes = [e.labels.shape for e in examples]
    counts = [len(e.variants) for e in examples]
    flat_variants = [v for e in examples for v in e.variants]
    dtype = dtype or label_dtype(examples)
    if plane_hw is None:
        label_at, label_planes, label_hw = shelf_layout(shapes)
        input_at, input_planes, input_hw = shelf_layout([v.shape[:2] for v in flat_variants])
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        variants = input_at
    else:
        slots = variant_slots or max(counts)
        label_at = np.array([(i, 0, 0) for i in range(len(examples))], np.int32).reshape(-1, 3)
        input_at = np.array([(i * slots + k, 0, 0) for i, c in enumerate(counts) for k in range(c)], np.int32).reshape(-1, 3)
        firsts = np.arange(len(examples), dtype=np.int32) * slots
        label_planes, input_planes, label_hw, input_hw = len(examples), len(examples) * slots, plane_hw, plane_hw
        # Variants are addressed by slot (first + k); unused slots stay empty planes.
        variants = np.zeros((input_planes, 3), np.int32)
        variants[:, 0] = np.arange(input_planes)
    table = np.column_stack([label_at, np.asarray(shapes, np.int32).reshape(-1, 2), firsts, counts]).astype(np.int32)
    return TrainingSet(
        inputs=_planes(flat_variants, input_at, input_planes, input_hw, np.uint8),
        labels=_planes([e.labels for e in examples], label_at, label_planes, label_hw, dtype),
        variants=variants,
        examples=table,
    )


def packed_bytes(examples: list[Example]) -> int:
    """What the resident set will take, from the layout alone."""
    _, label_planes, label_hw = shelf_layout([e.labels.shape for e in examples])
    variants = [v for e in examples for v in e.variants]
    _, input_planes, input_hw = shelf_layout([v.shape[:2] for v in variants])
    channels = variants[0].shape[2] if variants[0].ndim == 3 else 1
    tables = 4 * (3 * len(variants) + 7 * len(examples))
    return int(label_planes * math.prod(label_hw) * label_dtype(examples).itemsize
               + input_planes * math.prod(input_hw) * channels + tables)


def device_memory_bytes(device) -> int:
    """The device's memory: its allocator's limit, or the machine's RAM for a CPU."""
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_pipeline(pipeline: str, nbytes: int, device_bytes: int, share: float = RESIDENT_SHARE) -> str:
    """'resident' or 'streaming': 'auto' streams a set past share of the device's memory."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline '{pipeline}'; choose one of {', '.join(PIPELINES)}")
    if pipeline != "auto":
        return pipeline
    return "resident" if nbytes <= share * device_bytes else "streaming"


def group_weights(groups, balance: float) -> np.ndarray:
    """Each image's probability of being drawn, given its acquisition group:
    proportional to (its group's size) ** -balance. 0 draws every image
    alike (a 300-image experiment 20 times as often as a 15-image one); 1
    draws every group alike; in between, large groups still count for more."""
    _, index, counts = np.unique(np.asarray(groups, dtype=str), return_inverse=True, return_counts=True)
    weights = counts[index].astype(np.float64) ** -float(balance)
    return weights / weights.sum()


def epoch_order(seed: int, epoch: int, steps: int, batch_size: int, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(steps, batch_size) image indices, seeded by (seed, epoch), so a
    resumed epoch replays: shuffled passes over the n images, or, with
    per-image weights (group_weights), draws with those probabilities."""
    rng = np.random.default_rng([seed, epoch])
    if weights is not None:
        return rng.choice(n, size=(steps, batch_size), p=weights).astype(np.int32)
    order = np.concatenate([rng.permutation(n) for _ in range(steps * batch_size // n + 1)])
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def batch_key(seed: int, epoch: int, step: int) -> jax.Array:
    """The PRNG key of one step's augmentation."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), step)


def streamed_sets(examples: list[Example], order: np.ndarray, depth: int = 2):
    """Yield, for each row of indices in order, (TrainingSet on the device
    holding just those images, indices into it). A thread packs and sends
    up to `depth` steps ahead (double buffering), so the device need not wait."""
    plane_hw = (max(e.labels.shape[0] for e in examples), max(e.labels.shape[1] for e in examples))
    slots = max(len(e.variants) for e in examples)
    dtype = label_dtype(examples)
    local = np.arange(order.shape[1], dtype=np.int32)
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for row in order:
                if stop.is_set():
                    return
                ready.put(jax.device_put(pack([examples[i] for i in row], plane_hw, slots, dtype)))
        except BaseException as error:  # surface it in the consumer
            ready.put(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        for _ in range(len(order)):
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item, local
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.01)


class Draws(NamedTuple):
    """One batch's augmentation: per image the variant, the window's side
    as a share of the output (zoom), its corner, the symmetry (0..7),
    the elastic displacement (B, 2, S, S) (x then y, output px), gain and shift."""

    variant: jax.Array
    zoom: jax.Array
    corner: jax.Array  # (B, 2) top, left
    symmetry: jax.Array
    displacement: jax.Array
    gain: jax.Array
    shift: jax.Array
    blur: jax.Array | None = None  # (B,) Gaussian sigma in output px, 0 for none
    gamma: jax.Array | None = None  # (B,) power the input is raised to
    pale: jax.Array | None = None  # (B, PALE_SLOTS) share of its contrast nucleus (label % PALE_SLOTS) keeps
    noise: jax.Array | None = None  # (B, S, S) pixel noise added to every channel, 0 for none


#: Nuclei draw their fading by label modulo this: more than any crop holds.
PALE_SLOTS = 512


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) M with M @ a = a blurred along its first axis by a
    Gaussian of sigma, with OpenCV's default edge (reflect-101) and kernel
    length (8 sigma + 1, odd), as cv2.GaussianBlur does for float images."""
    length = int(round(sigma * 8 + 1)) | 1
    radius = length // 2
    taps = np.exp(-((np.arange(length) - radius) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    matrix = np.zeros((size, size), np.float64)
    period = max(2 * (size - 1), 1)
    for i in range(size):
        for t, weight in enumerate(taps):
            j = np.mod(i + t - radius, period)
            matrix[i, min(j, period - j) if size > 1 else 0] += weight
    return matrix.astype(np.float32)


def elastic_displacement(key: jax.Array, batch: int, size: int, alpha: float, sigma: float) -> jax.Array:
    """(batch, 2, size, size) smooth random displacements whose largest
    component is alpha px: uniform noise in -1..1, Gaussian-blurred."""
    noise = jax.random.uniform(key, (batch, 2, size, size), minval=-1.0, maxval=1.0)
    blur = jnp.asarray(blur_matrix(size, sigma))
    smooth = blur @ noise @ blur.T
    peak = jnp.abs(smooth).max(axis=(1, 2, 3), keepdims=True)
    return smooth * (alpha / jnp.maximum(peak, 1e-6))


def augmentation_values(inputs: InputConfig, augment: AugmentConfig | None) -> dict[str, jax.Array]:
    """The augmentation numbers a search varies between trials, as arrays
    draw_augmentation can take as arguments: one compiled train step then
    serves every value (whether an augmentation is on at all stays part of
    the program). The zoom's log-spread (read only where the crops rescale),
    the elastic deformation's probability."""
    return {"zoom_spread": jnp.float32(-math.log(1 - inputs.scale_jitter)),
            "elastic": jnp.float32(augment.elastic if augment is not None else 0.0)}


def draw_augmentation(key: jax.Array, hw: jax.Array, variant_counts: jax.Array, inputs: InputConfig,
                      augment: AugmentConfig | None, values: dict | None = None) -> Draws:
    """Draw a batch's augmentation for images of (B, 2) sizes hw; values:
    augmentation_values, traced or not (the configs' own when None)."""
    size, batch = inputs.size, hw.shape[0]
    values = augmentation_values(inputs, augment) if values is None else values
    keys = jax.random.split(key, 13)
    variant = jnp.minimum(jnp.floor(jax.random.uniform(keys[0], (batch,)) * variant_counts), variant_counts - 1)
    zoom = jnp.ones((batch,), jnp.float32)
    if inputs.rescales and inputs.scale_jitter > 0:
        # The window covers size / jitter training-scale px: jitter is log-uniform in 1 +- scale_jitter.
        spread = values["zoom_spread"]
        zoom = jnp.exp(jax.random.uniform(keys[1], (batch,), minval=-spread, maxval=spread))
    room = jnp.floor(jnp.maximum(hw - (zoom * size)[:, None], 0))
    corner = jnp.floor(jax.random.uniform(keys[2], (batch, 2)) * (room + 1))
    symmetry = jnp.zeros((batch,), jnp.int32)
    displacement = jnp.zeros((batch, 2, size, size), jnp.float32)
    gain, shift, blur, gamma, pale, noise = jnp.ones((batch,)), jnp.zeros((batch,)), None, None, None, None
    if augment is not None:
        if augment.flips:
            symmetry = jax.random.randint(keys[3], (batch,), 0, 8)
        if augment.elastic:
            warped = jax.random.uniform(keys[4], (batch,)) < values["elastic"]
            field = elastic_displacement(keys[5], batch, size, augment.elastic_alpha, augment.elastic_sigma)
            displacement = jnp.where(warped[:, None, None, None], field, 0.0)
        gain = 1 + jax.random.uniform(keys[6], (batch,), minval=-augment.contrast, maxval=augment.contrast)
        shift = jax.random.uniform(keys[7], (batch,), minval=-augment.brightness, maxval=augment.brightness)
        if augment.blur:
            blurred = jax.random.uniform(keys[8], (batch,)) < augment.blur
            sigma = jax.random.uniform(keys[9], (batch,), minval=0.5, maxval=max(augment.blur_sigma, 0.5))
            blur = jnp.where(blurred, sigma, 0.0)
        if augment.gamma:
            gamma = jnp.exp(jax.random.uniform(keys[10], (batch,), minval=-augment.gamma, maxval=augment.gamma))
        if augment.pale:
            faded = jax.random.uniform(keys[11], (batch, PALE_SLOTS)) < augment.pale
            share = jax.random.uniform(keys[12], (batch, PALE_SLOTS), minval=augment.pale_floor, maxval=1.0)
            pale = jnp.where(faded, share, 1.0)
        if augment.noise:  # its own keys: the other draws stay as they were without it
            grain = jax.random.split(jax.random.fold_in(key, 1), 3)
            noisy = jax.random.uniform(grain[0], (batch,)) < augment.noise
            sigma = jnp.where(noisy, jax.random.uniform(grain[1], (batch,), maxval=augment.noise_sigma), 0.0)
            noise = sigma[:, None, None] * jax.random.normal(grain[2], (batch, size, size))
    return Draws(variant.astype(jnp.int32), zoom, corner, symmetry, displacement, gain, shift, blur, gamma, pale, noise)


def fade_nuclei(x: jax.Array, labels: jax.Array, share: jax.Array) -> jax.Array:
    """(B, S, S, C) images whose nucleus with label l keeps share[b, l %
    PALE_SLOTS] of its contrast above the crop's background (the mean
    where labels are 0; 0 in a crop with none)."""
    background = labels == 0
    count = background.sum(axis=(1, 2))
    level = jnp.where(background[..., None], x, 0.0).sum(axis=(1, 2)) / jnp.maximum(count, 1)[:, None]
    level = level[:, None, None, :]
    keep = jnp.take_along_axis(share, (labels % PALE_SLOTS).reshape(labels.shape[0], -1), axis=1).reshape(labels.shape)
    keep = jnp.where(background, 1.0, keep)[..., None]
    return level + (x - level) * keep


def gaussian_blur(x: jax.Array, sigma: jax.Array) -> jax.Array:
    """(B, S, S, C) images each blurred by its own Gaussian sigma (B,) in px;
    0 leaves an image as it is. Separable, as (S, S) matrices whose rows are
    the kernel renormalised within the image (no padding to invent)."""
    grid = jnp.arange(x.shape[1], dtype=jnp.float32)
    distance = (grid[:, None] - grid[None, :]) ** 2
    safe = jnp.maximum(sigma, 1e-3)[:, None, None]
    taps = jnp.exp(-distance[None] / (2 * safe**2))
    matrix = taps / taps.sum(axis=2, keepdims=True)
    blurred = jnp.einsum("bij,bjkc,blk->bilc", matrix, x, matrix)
    return jnp.where((sigma > 0)[:, None, None, None], blurred, x)


def source_coordinates(draws: Draws, size: int) -> tuple[jax.Array, jax.Array]:
    """(rows, cols), each (B, S, S): where in its image each output pixel
    samples. The output is the window's content at size x size, under
    symmetry k (augment.symmetry's: k % 4 quarter turns, then a left-right
    flip when k >= 4), warped by the displacement; pixel centres are whole numbers."""
    grid = jnp.arange(size, dtype=jnp.float32)
    i = grid[None, :, None] + draws.displacement[:, 1]
    j = grid[None, None, :] + draws.displacement[:, 0]
    last = size - 1.0
    k = draws.symmetry[:, None, None]
    j = jnp.where(k >= 4, last - j, j)
    turns = k % 4
    # np.rot90 by q quarter turns reads out[i, j] from a[r, c]:
    r = jnp.select([turns == 0, turns == 1, turns == 2], [i, j, last - i], last - j)
    c = jnp.select([turns == 0, turns == 1, turns == 2], [j, last - i, last - j], i)
    zoom = draws.zoom[:, None, None]
    rows = draws.corner[:, 0, None, None] + (r + 0.5) * zoom - 0.5
    cols = draws.corner[:, 1, None, None] + (c + 0.5) * zoom - 0.5
    return rows, cols


def _mirror(index: jax.Array, n: jax.Array) -> jax.Array:
    """Whole-number positions mirrored into 0..n-1, the edge pixel repeated
    (numpy's 'symmetric' padding), however far outside they are."""
    period = 2 * n
    m = jnp.mod(index, period)
    return jnp.where(m >= n, period - 1 - m, m)


def _gather(planes, plane, origin, hw, rows, cols):
    """planes[plane, origin + mirrored (rows, cols)] for whole-number positions."""
    y = _mirror(rows.astype(jnp.int32), hw[:, 0, None, None]) + origin[:, 0, None, None]
    x = _mirror(cols.astype(jnp.int32), hw[:, 1, None, None]) + origin[:, 1, None, None]
    return planes[plane[:, None, None], y, x]


def sample_linear(planes, plane, origin, hw, rows, cols) -> jax.Array:
    """(B, S, S, C) float32: bilinear samples of each image at (rows, cols)."""
    top, left = jnp.floor(rows), jnp.floor(cols)
    wy, wx = (rows - top)[..., None], (cols - left)[..., None]

    def at(dy, dx):
        return _gather(planes, plane, origin, hw, top + dy, left + dx).astype(jnp.float32)

    upper = at(0, 0) * (1 - wx) + at(0, 1) * wx
    lower = at(1, 0) * (1 - wx) + at(1, 1) * wx
    return upper * (1 - wy) + lower * wy


def sample_nearest(planes, plane, origin, hw, rows, cols) -> jax.Array:
    """(B, S, S) int32: the label under each position."""
    return _gather(planes, plane, origin, hw, jnp.floor(rows + 0.5), jnp.floor(cols + 0.5)).astype(jnp.int32)


def render(data: TrainingSet, indices: jax.Array, draws: Draws, inputs: InputConfig):
    """The batch the draws describe: (x (B, S, S, C) float32 in 0..1, labels (B, S, S) int32)."""
    examples = data.examples[indices]
    hw = examples[:, 3:5]
    variant = data.variants[examples[:, 5] + draws.variant]
    rows, cols = source_coordinates(draws, inputs.size)
    x = sample_linear(data.inputs, variant[:, 0], variant[:, 1:3], hw, rows, cols) / 255.0
    labels = sample_nearest(data.labels, examples[:, 0], examples[:, 1:3], hw, rows, cols)
    if draws.pale is not None:
        x = fade_nuclei(x, labels, draws.pale)
    if draws.blur is not None:
        x = gaussian_blur(x, draws.blur)
    if draws.gamma is not None:
        x = jnp.maximum(x, 0.0) ** draws.gamma[:, None, None, None]
    x = (x - 0.5) * draws.gain[:, None, None, None] + 0.5 + draws.shift[:, None, None, None]
    if draws.noise is not None:
        x = x + draws.noise[..., None]
    return jnp.clip(x, 0.0, 1.0), labels


def make_batch(key: jax.Array, data: TrainingSet, indices: jax.Array, inputs: InputConfig,
               augment: AugmentConfig | None, values: dict | None = None):
    """One training batch, drawn on the device: (x (B, S, S, C) float32, targets (B, S, S, K) float32).

    indices pick the batch's images in data; key draws everything else; values: augmentation_values."""
    examples = data.examples[indices]
    draws = draw_augmentation(key, examples[:, 3:5], examples[:, 6], inputs, augment, values)
    x, labels = render(data, indices, draws, inputs)
    return x, targets(labels, inputs.border)
