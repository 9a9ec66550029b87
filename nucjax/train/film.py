"""The report's per-epoch prediction film: for a few fixed validation
images, a frame per epoch (image, truth, probabilities, instances), and an
animated GIF of every epoch at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucjax.pictures import TRUTH_COLOUR, contour_overlay, probability_image, side_by_side
from nucjax.postprocess import PostprocessConfig, instances

FILM_IMAGES = 3


def film_frame(images, truths, maps, postprocess: PostprocessConfig, height: int = 160) -> np.ndarray:
    """One RGB frame: a row per image of image | truth | probabilities | prediction."""
    rows = [
        side_by_side(
            [image, contour_overlay(image, truth, TRUTH_COLOUR), probability_image(probs),
             contour_overlay(image, instances(probs, postprocess.for_image(image)))],
            height,
        )
        for image, truth, probs in zip(images, truths, maps)
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def write_frame(frame: np.ndarray, folder: Path, epoch: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{epoch:04d}.png"
    Image.fromarray(frame).save(path)
    return path


def write_film(folder: Path, out: Path, seconds_per_frame: float = 0.8) -> int:
    """Join every frame PNG in folder, in epoch order, into an animated GIF; returns the frame count."""
    from PIL import Image

    paths = sorted(folder.glob("epoch_*.png"))
    if not paths:
        return 0
    frames = [Image.open(p).convert("RGB") for p in paths]
    size = (max(f.width for f in frames), max(f.height for f in frames))
    frames = [f if f.size == size else f.resize(size) for f in frames]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(seconds_per_frame * 1000), loop=0)
    return len(frames)
