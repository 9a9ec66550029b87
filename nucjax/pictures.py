"""Pictures of results: instance contours over the image, and probability
maps as images. Pure functions returning (H, W, 3) uint8 RGB arrays; the
callers write them."""

from __future__ import annotations

import cv2
import numpy as np

#: Contour colours: a prediction in yellow, the truth in cyan.
PREDICTION_COLOUR = (255, 220, 0)
TRUTH_COLOUR = (0, 220, 255)


def contours(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of each object that touch another label or the background."""
    labels = labels.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    return (labels > 0) & ((cv2.erode(labels, kernel) != labels) | (cv2.dilate(labels, kernel) != labels))


def contour_overlay(image: np.ndarray, labels: np.ndarray, colour=PREDICTION_COLOUR) -> np.ndarray:
    """The image (H, W, 3) uint8 with the contour of every instance drawn on it."""
    out = image.copy()
    out[contours(labels)] = colour
    return out


def probability_image(probabilities: np.ndarray) -> np.ndarray:
    """(H, W, K) probabilities as RGB: body in grey, border (when K > 1) in red."""
    body = np.clip(probabilities[..., 0] * 255, 0, 255).astype(np.uint8)
    out = np.repeat(body[..., None], 3, axis=2)
    if probabilities.shape[-1] > 1:
        out[..., 0] = np.maximum(out[..., 0], np.clip(probabilities[..., 1] * 255, 0, 255).astype(np.uint8))
    return out


def side_by_side(panels, height: int = 192) -> np.ndarray:
    """Panels (RGB uint8) scaled to one height and joined left to right, with a 4 px gap."""
    scaled = []
    for panel in panels:
        width = max(1, round(panel.shape[1] * height / panel.shape[0]))
        scaled.append(cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST))
        scaled.append(np.full((height, 4, 3), 255, np.uint8))
    return np.concatenate(scaled[:-1], axis=1)


def write_overlay(path, picture: np.ndarray) -> None:
    """Write an RGB picture as a PNG, making its folder."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
