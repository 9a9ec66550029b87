"""The reference report's preprocessing and its resizing, as pure numpy functions.

Images come in as (H, W, 3) uint8 RGB. The report read PNGs with OpenCV (BGR)
and converted with COLOR_BGR2GRAY; on RGB data COLOR_RGB2GRAY weighs the
same physical channels, so the grey values are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Grey images brighter than this on average are bright-field: inverted.
INVERT_MEAN = 150.0


def is_colour(image: np.ndarray) -> bool:
    """True unless all three channels are equal (the report's grey test)."""
    if image.ndim == 2 or image.shape[-1] == 1:
        return False
    return not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (H, W) uint8 with OpenCV's luma weights."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def stretch(grey: np.ndarray) -> np.ndarray:
    """Min-max stretch to 0..255 (uint8); a constant image becomes 0."""
    return cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)


def colour_boost(grey: np.ndarray) -> np.ndarray:
    """The report's second stretch for colour images: (x - 50) * 255 / 155, clipped."""
    boosted = (grey.astype(np.float32) - 50.0) * (255.0 / 155.0)
    return np.clip(np.rint(boosted), 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray) -> np.ndarray:
    """The report's chain: nuclei bright on a dark background, (H, W) uint8.

    Grey conversion; colour images always inverted, grey ones when their
    mean is above INVERT_MEAN; min-max stretch; for colour images the
    extra boost.
    """
    colour = is_colour(image)
    grey = to_grey(image)
    if colour or grey.mean() > INVERT_MEAN:
        grey = 255 - grey
    out = stretch(grey)
    return colour_boost(out) if colour else out


#: Percentiles that bound the percentile normalisation (StarDist's and Cellpose's).
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.8
PREPROCESSING = ("reference", "stain")
NORMALISATIONS = ("minmax", "percentile")


def percentile_stretch(values: np.ndarray, low: float = LOW_PERCENTILE, high: float = HIGH_PERCENTILE) -> np.ndarray:
    """(H, W) values -> uint8 with the low percentile at 0 and the high one
    at 255, clipped: one bright speck or an uneven field no longer squeezes
    the nuclei into a few grey levels, as a min-max stretch does."""
    values = np.asarray(values, np.float32)
    lo, hi = np.percentile(values, (low, high))
    if hi <= lo:
        return stretch(values)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def haematoxylin(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 optical density of the haematoxylin stain of an RGB
    image (colour deconvolution, scikit-image's rgb2hed): high on nuclei,
    low on eosin-stained tissue and on the bright background."""
    from skimage.color import rgb2hed

    return rgb2hed(np.ascontiguousarray(image[..., :3]))[..., 0].astype(np.float32)


def nucleus_channel(image: np.ndarray, preprocessing: str = "reference", normalisation: str = "minmax") -> np.ndarray:
    """Nuclei bright on a dark background, (H, W) uint8, for any kind of image.

    reference: the report's chain (preprocess). stain: colour images give
    their haematoxylin density instead of inverted grey, so stained tissue
    around the nuclei stays dark; grey images are treated as in reference.
    normalisation: minmax (the report's stretch) or percentile (1 to 99.8).
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing '{preprocessing}'; choose one of {', '.join(PREPROCESSING)}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation '{normalisation}'; choose one of {', '.join(NORMALISATIONS)}")
    if normalisation == "minmax":
        return stretch(haematoxylin(image)) if preprocessing == "stain" and is_colour(image) else preprocess(image)
    return percentile_stretch(nucleus_signal(image, preprocessing))


def nucleus_signal(image: np.ndarray, preprocessing: str = "stain") -> np.ndarray:
    """(H, W) float32 nuclei bright, before the percentile normalisation:
    the haematoxylin density of a colour image with 'stain', else the grey
    image, inverted when it is colour or bright. What an exported model
    (nucjax.bioimage) takes in, the normalisation left to the package."""
    colour = is_colour(image)
    if preprocessing == "stain" and colour:
        return haematoxylin(image)
    grey = to_grey(image)
    if colour or grey.mean() > INVERT_MEAN:
        grey = 255 - grey
    return grey.astype(np.float32)


def adaptive_threshold(preprocessed: np.ndarray, block_size: int = 11, c: float = 2) -> np.ndarray:
    """Gaussian adaptive threshold of a preprocessed (H, W) uint8 image: 0 or 255.

    The multi-arm U-Net takes it as its third input.
    """
    return cv2.adaptiveThreshold(
        preprocessed, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block_size, c
    )


@dataclass(frozen=True)
class SquareGeometry:
    """How an image was mapped into an S x S square, so a prediction can be mapped back.

    With keep_aspect the long side is scaled to S and the image sits in the
    top-left corner of the square, padded with zeros; otherwise it is
    stretched to S x S.
    """

    original_hw: tuple[int, int]
    size: int
    keep_aspect: bool

    @property
    def scaled_hw(self) -> tuple[int, int]:
        """The (h, w) the image content occupies inside the square."""
        if not self.keep_aspect:
            return (self.size, self.size)
        h, w = self.original_hw
        scale = self.size / max(h, w)
        return (max(1, round(h * scale)), max(1, round(w * scale)))


def _resize(array: np.ndarray, hw: tuple[int, int], nearest: bool) -> np.ndarray:
    if array.shape[:2] == tuple(hw):
        return array.copy()
    # Pixel-centred nearest neighbour: an upscale then its inverse give back
    # every label exactly, which plain INTER_NEAREST does not.
    interpolation = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    out = cv2.resize(array, (hw[1], hw[0]), interpolation=interpolation)
    return out.reshape(hw + array.shape[2:]) if array.ndim == 3 and out.ndim == 2 else out


def to_square(array: np.ndarray, size: int, keep_aspect: bool = False, nearest: bool = False):
    """Resize an (H, W) or (H, W, C) array into (size, size[, C]).

    Returns (square, geometry). Use nearest=True for labels and masks.
    """
    if size < 1:
        raise ValueError(f"square size must be positive, got {size}")
    geometry = SquareGeometry(tuple(array.shape[:2]), size, keep_aspect)
    scaled = _resize(array, geometry.scaled_hw, nearest)
    if not keep_aspect:
        return scaled, geometry
    square = np.zeros((size, size) + array.shape[2:], dtype=array.dtype)
    h, w = geometry.scaled_hw
    square[:h, :w] = scaled
    return square, geometry


def from_square(square: np.ndarray, geometry: SquareGeometry, nearest: bool = False) -> np.ndarray:
    """Map a prediction made on the square back to the original (H, W).

    The padding is cut away first, then the content is resized to the
    original size; with nearest=True labels keep their ids.
    """
    if square.shape[:2] != (geometry.size, geometry.size):
        raise ValueError(f"expected a {geometry.size}x{geometry.size} prediction, got {square.shape[:2]}")
    h, w = geometry.scaled_hw
    return _resize(square[:h, :w], geometry.original_hw, nearest)
