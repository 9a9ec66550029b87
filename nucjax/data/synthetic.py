"""A synthetic DSB-like dataset: the embedded default and the workhorse of tests.

Three kinds in DSB2018's proportions (grey fluorescence, grey bright-field,
colour histology); nuclei of varied size, ellipticity, outline and texture,
scattered or in touching clusters; uneven background, blur and noise; exact
instance labels. Everything follows from the config's seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from nucjax.data.kaggle import Sample
from nucjax.data.split import BRIGHTFIELD, FLUORESCENCE, HISTOLOGY


#: Bump when the generator's output changes, so cached sets are rebuilt.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. sizes are (H, W); weights need not sum to 1."""

    n_images: int = 60
    seed: int = 0
    sizes: tuple[tuple[int, int], ...] = ((256, 256), (256, 320), (360, 360), (520, 696))
    size_weights: tuple[float, ...] = (0.5, 0.17, 0.14, 0.19)
    kind_weights: tuple[tuple[str, float], ...] = ((FLUORESCENCE, 0.82), (BRIGHTFIELD, 0.03), (HISTOLOGY, 0.15))

    def __post_init__(self):
        if self.n_images < 1:
            raise ValueError(f"n_images must be at least 1, got {self.n_images}")
        if len(self.sizes) != len(self.size_weights):
            raise ValueError("sizes and size_weights differ in length")
        if any(min(hw) < 16 for hw in self.sizes):
            raise ValueError(f"synthetic images must be at least 16x16, got {self.sizes}")


#: The small set the search's embedded default runs on: four trials fit in
#: a few minutes on two cores.
SEARCH_SMOKE = SyntheticConfig(n_images=24, seed=0, sizes=((128, 128), (96, 160)), size_weights=(1, 1))


def image_kinds(config: SyntheticConfig) -> list[str]:
    """The kind of every image: quotas by largest remainder, so a small set
    still holds every kind with a positive weight, in a seeded order."""
    names = [k for k, _ in config.kind_weights]
    weights = np.array([w for _, w in config.kind_weights], dtype=float)
    share = weights / weights.sum() * config.n_images
    counts = np.floor(share).astype(int)
    # Each kind gets at least one image when there is room for it.
    for i in np.argsort(-weights):
        if counts[i] == 0 and weights[i] > 0 and counts.sum() < config.n_images:
            counts[i] = 1
    for i in np.argsort(-(share - np.floor(share))):
        if counts.sum() >= config.n_images:
            break
        counts[i] += 1
    while counts.sum() > config.n_images:
        counts[np.argmax(counts)] -= 1
    kinds = [name for name, c in zip(names, counts) for _ in range(c)]
    np.random.default_rng([config.seed, 1]).shuffle(kinds)
    return kinds


def synthetic_id(config: SyntheticConfig, index: int) -> str:
    """A Kaggle-like hex id, fixed by the seed and the index."""
    return hashlib.sha256(f"nucjax-synthetic:{config.seed}:{index}".encode()).hexdigest()


def generate(config: SyntheticConfig):
    """Yield config.n_images Samples (RGB image, int32 labels)."""
    for index, kind in enumerate(image_kinds(config)):
        yield synthetic_sample(config, index, kind)


def synthetic_sample(config: SyntheticConfig, index: int, kind: str) -> Sample:
    rng = np.random.default_rng([config.seed, 2, index])
    weights = np.array(config.size_weights, dtype=float)
    height, width = config.sizes[rng.choice(len(config.sizes), p=weights / weights.sum())]
    labels = place_nuclei(rng, (height, width))
    image = render(rng, labels, kind)
    return Sample(synthetic_id(config, index), image, labels)


def place_nuclei(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels of randomly shaped nuclei, some in touching clusters.

    Each nucleus keeps one connected piece; a new one may cover at most 15%
    of its area with older ones, and only the uncovered part is kept.
    """
    height, width = shape
    scale = np.sqrt(min(height, width) / 256)
    radius = rng.choice([rng.uniform(3, 6), rng.uniform(6, 11), rng.uniform(11, 22)], p=[0.35, 0.45, 0.2]) * scale
    radius = max(radius, 2.5)
    density = rng.uniform(0.05, 0.3)
    n_target = int(np.clip(density * height * width / (np.pi * radius**2), 1, 400))
    clustered = rng.random() < 0.5
    cluster_centres = rng.uniform((0, 0), (height, width), size=(rng.integers(1, 5), 2))

    labels = np.zeros(shape, dtype=np.int32)
    n_placed = 0
    for _ in range(3 * n_target):
        if n_placed == n_target:
            break
        r = radius * rng.uniform(0.7, 1.3)
        if clustered and rng.random() < 0.8:
            centre = cluster_centres[rng.integers(len(cluster_centres))] + rng.normal(0, 2.5 * radius, 2)
        else:
            centre = rng.uniform((0, 0), (height, width))
        n_placed += _add_nucleus(rng, labels, centre, r, n_placed + 1)
    return labels


def _add_nucleus(rng, labels, centre, r, label) -> bool:
    """Paint one nucleus with the given label; False when it does not fit."""
    height, width = labels.shape
    a = r * rng.uniform(1.0, 1.5)  # semi-axes: ellipticity up to 1.5
    b = r / rng.uniform(1.0, 1.3)
    half = int(np.ceil(max(a, b) * 1.3)) + 1
    y0, x0 = int(round(centre[0])), int(round(centre[1]))
    top, bottom = max(y0 - half, 0), min(y0 + half + 1, height)
    left, right = max(x0 - half, 0), min(x0 + half + 1, width)
    if bottom - top < 2 or right - left < 2:
        return False
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
    yy -= centre[0]
    xx -= centre[1]
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    theta = np.arctan2(v, u)
    # A wavy outline: low harmonics of the angle bend the ellipse.
    wobble = 1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    inside = (u / a) ** 2 + (v / b) ** 2 <= wobble**2
    area = np.count_nonzero(inside)
    if area < 6:
        return False
    window = labels[top:bottom, left:right]
    if np.count_nonzero(inside & (window > 0)) > 0.15 * area:
        return False
    free = (inside & (window == 0)).astype(np.uint8)
    n, pieces, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
    if n < 2:
        return False
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    keep = pieces == largest
    if np.count_nonzero(keep) < 0.7 * area:
        return False
    window[keep] = label
    return True


def _smooth_field(rng, shape, cells: int, low: float, high: float) -> np.ndarray:
    """A smooth random field in [low, high]: a coarse grid, upsampled."""
    coarse = rng.uniform(low, high, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(low, high)


def _texture(rng, shape, sigma: float) -> np.ndarray:
    """Blurred noise with zero mean and unit spread: chromatin-like texture."""
    noise = rng.normal(0, 1, size=shape).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
    return blurred / max(float(blurred.std()), 1e-6)


def render(rng: np.random.Generator, labels: np.ndarray, kind: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of the labelled nuclei in the given kind's look."""
    shape = labels.shape
    n = int(labels.max())
    # Each nucleus has its own brightness; texture varies inside it.
    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, n)]).astype(np.float32)
    body = brightness[labels] * (1 + 0.15 * _texture(rng, shape, rng.uniform(1, 2.5)))
    # Soft edges: the optics blur the nucleus into its surroundings.
    body = cv2.GaussianBlur(body, (0, 0), rng.uniform(0.6, 1.5))
    background = _smooth_field(rng, shape, int(rng.integers(2, 5)), 0.6, 1.4)
    noise = rng.normal(0, 1, size=shape).astype(np.float32)

    if kind == FLUORESCENCE:
        amplitude = rng.uniform(60, 230) if rng.random() < 0.8 else rng.uniform(20, 60)  # some dim
        grey = rng.uniform(2, 15) * background + amplitude * body + rng.uniform(1, 6) * noise
        return _grey_rgb(grey)
    if kind == BRIGHTFIELD:
        grey = rng.uniform(195, 235) * (0.85 + 0.15 * background) - rng.uniform(50, 110) * body
        return _grey_rgb(grey + rng.uniform(2, 6) * noise)
    if kind == HISTOLOGY:
        paper = np.array(rng.uniform([220, 180, 200], [245, 215, 235]), np.float32)
        eosin = np.array(rng.uniform([180, 90, 140], [215, 140, 185]), np.float32)
        haematoxylin = np.array(rng.uniform([70, 40, 110], [130, 90, 170]), np.float32)
        tissue = (_smooth_field(rng, shape, int(rng.integers(4, 9)), 0, 1) * (1 + 0.2 * _texture(rng, shape, 3))).clip(0, 1)
        rgb = paper * (1 - tissue[..., None]) + eosin * tissue[..., None]
        stain = body.clip(0, 1)[..., None]
        rgb = rgb * (1 - stain) + haematoxylin * stain
        rgb += rng.uniform(2, 6) * rng.normal(0, 1, size=rgb.shape).astype(np.float32)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown image kind '{kind}'")


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
