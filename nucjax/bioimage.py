"""bioimage.io model packages of a trained U-Net: written from a
checkpoint, read back as a nucjax Model that runs the ONNX weights.

A package is a folder (or its zip) holding rdf.yaml, the network as ONNX
weights (nucjax.models.onnx_graph: free height and width, multiples of
2**depth), test tensors computed by the JAX model, a cover and a README.
What the format expresses, it carries: the percentile normalisation of
the nucleus channel (scale_range, then clip), the RGB arm's 1/255. What it
cannot, the README says and config.nucjax holds, so that nucjax reads the
package back exactly: how the nucleus channel is made (haematoxylin
density for stained tissue), the nucleus diameter the model was trained
at, the adaptive-threshold arm, and the post-processing that turns the
body and border maps into one label per nucleus, with its calibrated
thresholds.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from nucjax.config import ExperimentConfig
from nucjax.inference import Predictor
from nucjax.inputs import reflect_pad
from nucjax.models.onnx_graph import OPSET, OUTPUT, input_names, network_graph, onnx_forward
from nucjax.pictures import contour_overlay, probability_image, side_by_side, write_overlay
from nucjax.postprocess import instances, resolved_method, settings_text
from nucjax.preprocess import (
    HIGH_PERCENTILE,
    INVERT_MEAN,
    LOW_PERCENTILE,
    adaptive_threshold,
    nucleus_signal,
    percentile_stretch,
    to_square,
)

RDF = "rdf.yaml"
WEIGHTS = "weights.onnx"
#: The bioimage.io model format the packages are written in (bioimageio.spec 0.5 reads and updates it).
FORMAT_VERSION = "0.5.4"
#: scale_range's epsilon in the format (bioimageio.core adds it to the range).
RANGE_EPS = 1e-6
#: The largest side of the test image a package carries.
TEST_SIDE = 256
AUTHORS = [{"name": "The nucjax developers"}]
LICENSE = "Apache-2.0"
CITE = [
    {"text": "Caicedo et al. (2019), Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
             "Nature Methods 16, 1247-1253 (the training data, DSB2018 stage 1).",
     "doi": "10.1038/s41592-019-0612-7"},
    {"text": "Ronneberger, Fischer and Brox (2015), U-Net: convolutional networks for biomedical image segmentation. "
             "MICCAI 2015 (the architecture).",
     "doi": "10.1007/978-3-319-24574-4_28"},
]
#: The training sets a package can name (nucjax.export --training-data).
TRAINING_DATA = {
    "dsb2018": {
        "type": "dataset",
        "format_version": "0.2.4",
        "name": "DSB2018 stage-1 training set",
        "description": "The 2018 Data Science Bowl's stage-1 training images of nuclei (fluorescence, bright-field "
                       "and stained tissue), one mask per nucleus; public domain (CC0).",
        "license": "CC0-1.0",
        "cite": CITE[:1],
        "source": "https://www.kaggle.com/c/data-science-bowl-2018/data",
    },
    "synthetic": {
        "type": "dataset",
        "format_version": "0.2.4",
        "name": "nucjax synthetic DSB-like set",
        "description": "Images nucjax generates (nucjax.data.synthetic): DSB2018's three kinds of image with "
                       "exact masks; a model trained on it is a demonstration, not a tool for real images.",
        "license": "CC0-1.0",
    },
}
#: How the package's README names each training set.
TRAINING_TEXT = {
    "dsb2018": "the DSB2018 stage-1 training images (Caicedo et al. 2019, CC0)",
    "synthetic": "nucjax's synthetic DSB-like images (a demonstration: not for real images)",
}
TAGS = ["nuclei", "instance-segmentation", "unet", "2d", "fluorescence-light-microscopy",
        "brightfield-microscopy", "histology", "dsb2018", "nucjax", "onnx"]


#: How each post-processing method makes nuclei of the mask, for the package's README.
METHOD_TEXT = {
    "border": ("seeds are the pieces of body x (1 - border) > {post.seed_threshold:.3f} of at least "
               "{post.min_seed_size} px, grown by a watershed on the inverted body probability within the mask."),
    "distance": ("the peaks of its Euclidean distance transform (smoothed by {post.distance_sigma:g} px, the highest "
                 "point within {post.peak_radius} px) grow by a watershed on the inverted distance within the mask."),
    "cc": "each connected piece of the mask is a nucleus.",
    "reference": "the reference report's OpenCV chain (nucjax.postprocess.reference_instances) splits it.",
}


#: What size of image the package takes, by input mode, for its README.
SIZE_TEXT = {
    "crop": ("Height and width: any multiple of {config.model.multiple} (at least {smallest}). Tile larger images "
             "with a margin of 16 px or more; nucjax mirrors 16 px around each image."),
    "resize": ("Height and width: {config.inputs.size} x {config.inputs.size}. The model was trained on whole images "
               "squeezed to that square: resize the whole image to it (bilinear, not keeping its aspect), predict, "
               "and resize the probabilities back; do not tile. nucjax does so."),
}


def kind_text(post) -> str:
    """What a kind's own calibrated settings change, for the package's README (empty when none)."""
    lines = [f"{kind.capitalize()} images use {settings_text(fields)} instead." for kind, fields in post.by_kind]
    if not lines:
        return ""
    return (f"The kind of an image decides some settings (`nucjax.data.split.image_kind`: colour is histology; "
            f"grey with a mean above {INVERT_MEAN:g} of 255 is bright-field; else fluorescence). "
            + " ".join(lines) + "\n")


class PackageError(Exception):
    """A model the format cannot carry, or a package nucjax cannot read; the message says why."""


def check_exportable(config: ExperimentConfig) -> None:
    """PackageError unless the format can describe how the model reads images."""
    if config.inputs.normalisation != "percentile":
        raise PackageError(
            f"normalisation '{config.inputs.normalisation}' (the report's stretch and colour boost) has no bioimage.io "
            "pre-processing; export a model trained with --normalisation percentile")


def test_region(image: np.ndarray, config: ExperimentConfig, side: int = TEST_SIDE) -> np.ndarray:
    """The image as the package's test input shows it: a 'resize'-mode
    model's whole image squeezed to its size; else the image's top-left
    corner, each side cut to a multiple of 2**depth and at most `side`
    (mirrored up to the smallest size the package takes)."""
    if config.inputs.mode == "resize":
        return to_square(image, config.inputs.size)[0]
    smallest, multiple = smallest_side(config), config.model.multiple
    height, width = (max(smallest, min(s, side) // multiple * multiple) for s in image.shape[:2])
    return np.ascontiguousarray(reflect_pad(image, height, width)[:height, :width])


def smallest_side(config: ExperimentConfig) -> int:
    """The smallest height and width a package takes (crop mode)."""
    return max(config.model.multiple, 32)


def package_inputs(image: np.ndarray, config: ExperimentConfig) -> dict[str, np.ndarray]:
    """The package's input tensors for an RGB uint8 image, (1, C, H, W)
    float32 each, before the format's pre-processing: the nucleus signal
    (preprocess.nucleus_signal), and for the extended model the adaptive
    threshold of its normalised channel (0 or 1) and the RGB image (0..255)."""
    signal = nucleus_signal(image, config.inputs.preprocessing)
    tensors = {"nucleus": signal[None, None]}
    if config.model.model == "extended":
        threshold = adaptive_threshold(percentile_stretch(signal)) / 255.0
        tensors["threshold"] = threshold[None, None]
        tensors["rgb"] = image[..., :3].transpose(2, 0, 1)[None]
    return {name: np.ascontiguousarray(t, np.float32) for name, t in tensors.items()}


def preprocessed(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors as the format's pre-processing leaves them (what
    describe declares): the nucleus signal scaled so its 1st and 99.8th
    percentiles are 0 and 1 and clipped, the RGB image divided by 255."""
    out = dict(tensors)
    signal = tensors["nucleus"]
    lo, hi = np.percentile(signal, (LOW_PERCENTILE, HIGH_PERCENTILE), axis=(2, 3), keepdims=True)
    out["nucleus"] = np.clip((signal - lo) / (hi - lo + RANGE_EPS), 0, 1).astype(np.float32)
    if "rgb" in tensors:
        out["rgb"] = (tensors["rgb"] / 255.0).astype(np.float32)
    return out


def _axes(channels: list[str], size) -> list[dict]:
    return [{"type": "batch"}, {"type": "channel", "channel_names": channels},
            {"type": "space", "id": "y", "size": size("y")}, {"type": "space", "id": "x", "size": size("x")}]


def describe(config: ExperimentConfig, name: str, score: float, provenance: dict, training_data: str = "dsb2018") -> dict:
    """The rdf.yaml of a package of this model (files named as write_package names them)."""
    if config.inputs.mode == "resize":  # the whole image, squeezed: one size
        free = lambda axis: config.inputs.size  # noqa: E731
    else:
        free = lambda axis: {"min": smallest_side(config), "step": config.model.multiple}  # noqa: E731
    follow = lambda axis: {"tensor_id": "nucleus", "axis_id": axis}  # noqa: E731
    percentiles = {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": LOW_PERCENTILE,
                                                   "max_percentile": HIGH_PERCENTILE, "eps": RANGE_EPS}}
    described = {
        "nucleus": ("Nucleus channel, nuclei bright: the grey image (inverted if bright) or the haematoxylin "
                    "density (README)", ["nucleus"], free,
                    [percentiles, {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}]),
        "threshold": ("Adaptive Gaussian threshold (11 px, C 2) of the normalised nucleus channel, 0 or 1",
                      ["threshold"], follow, []),
        "rgb": ("The RGB image, 0..255", ["red", "green", "blue"], follow,
                [{"id": "scale_linear", "kwargs": {"gain": 1 / 255.0, "offset": 0.0}}]),
    }
    inputs = []
    for tensor in input_names(config.model.model):
        text, channels, size, steps = described[tensor]
        inputs.append({"id": tensor, "description": text, "axes": _axes(channels, size),
                       "test_tensor": {"source": f"test_input_{tensor}.npy"},
                       "data": {"type": "float32"}, "preprocessing": steps})
    channels = ["body", "border"][: config.model.out_channels]
    output = {"id": OUTPUT, "description": "Probability of nucleus body (and border), see README for the labels",
              "axes": _axes(channels, follow),
              "test_tensor": {"source": f"test_output_{OUTPUT}.npy"},
              "data": {"type": "float32", "range": [0.0, 1.0]}}
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": f"nucjax {config.model.model} U-Net for nuclei",
        "description": (f"Nucleus instance segmentation (DSB2018-style images): a {config.model.model} U-Net trained "
                        "with nucjax" + (f" at a nucleus diameter of {config.inputs.diameter:g} px" if config.inputs.rescales
                                         else "") + "; body and border probabilities, split into nuclei by nucjax's "
                        "post-processing."),
        "authors": AUTHORS,
        "cite": CITE,
        "license": LICENSE,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": TAGS,
        "inputs": inputs,
        "outputs": [output],
        "weights": {"onnx": {"source": WEIGHTS, "opset_version": OPSET}},
        "training_data": TRAINING_DATA[training_data],
        "config": {"nucjax": {"experiment": config.to_dict(), "model": name, "validation_score": float(score),
                              **provenance}},
    }


def documentation(config: ExperimentConfig, name: str, score: float, training_data: str = "dsb2018") -> str:
    """The package's README.md: what the model expects, what it gives, and how to get nuclei from it."""
    post = config.postprocess
    method = resolved_method(post, config.model.out_channels)
    extended = config.model.model == "extended"
    scale_text = (f"The model was trained with nuclei about {config.inputs.diameter:g} px across (each training image "
                  f"resized so its median nucleus had that diameter, give or take {config.inputs.scale_jitter:.0%}). "
                  "Images whose nuclei are larger segment best shrunk to that diameter first; nucjax estimates it "
                  "(`--scale auto`, one scale per acquisition).")
    return f"""# nucjax {config.model.model} U-Net for nuclei

Trained with nucjax on {TRAINING_TEXT[training_data]}; checkpoint `{name}`.

## Inputs
- `nucleus` (batch, channel, y, x), float32: the nucleus channel, nuclei bright on a dark background.
  Grey images: the grey image (OpenCV's luma of RGB), inverted (255 - grey) when its mean is over 150
  (bright-field). {"Stained (colour) images: their haematoxylin optical density (scikit-image's `rgb2hed`, channel 0)."
  if config.inputs.preprocessing == "stain" else "Colour images: their grey image, inverted."}
  The package's pre-processing then maps its {LOW_PERCENTILE:g}th and {HIGH_PERCENTILE:g}th percentiles to 0 and 1 and clips.
{'''- `threshold`: the normalised nucleus channel (0..255) through OpenCV's adaptive Gaussian threshold
  (block 11, C 2), as 0 or 1. The format cannot compute it; nucjax does.
- `rgb`: the RGB image, 0..255 (divided by 255 by the pre-processing).
''' if extended else ''}
{SIZE_TEXT[config.inputs.mode].format(config=config, smallest=smallest_side(config))}

## Scale
{scale_text if config.inputs.rescales else "The model was trained on images at their own resolution (or squeezed, see above): no rescaling."}

## Outputs
`probabilities` (batch, channel, y, x): channel 0 the probability of a nucleus body{", channel 1 of a nucleus border"
if config.model.out_channels > 1 else ""}.

## From probabilities to nuclei
Not expressible in the format; `config.nucjax.experiment.postprocess` carries the calibrated settings.
The mask is body > {post.threshold:.3f}{", its holes filled" if post.fill_holes and method != "reference" else ""}; {METHOD_TEXT[method].format(post=post)}
Objects under {post.min_size} px are dropped{f", and those whose mean body probability is under {post.min_mean_probability:.2f}" if post.min_mean_probability else ""}.
{kind_text(post)}`nucjax.Segmenter.load("this-package.zip")` does all of it, and `python -m nucjax.predict --checkpoint
this-package.zip --data FOLDER` writes a Kaggle submission.

## Validation
Kaggle DSB2018 score (mean over IoU thresholds 0.5 to 0.95 of TP / (TP + FP + FN), per image) on nucjax's
held-out experiments of the training set when the checkpoint was saved: {score:.4f}. To validate on your own
labelled images: `python -m nucjax.predict --checkpoint this-package.zip --data FOLDER` (Kaggle's layout).

## Training data and licence
{TRAINING_TEXT[training_data]}. nucjax builds on a report that trained Keras U-Nets on DSB2018.
Weights: {LICENSE}.
"""


def _write_array(path: Path, array: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(array, np.float32))


def write_package(folder: Path, network, config: ExperimentConfig, name: str, score: float, image: np.ndarray,
                  provenance: dict | None = None, training_data: str = "dsb2018") -> Path:
    """Write the package files of a trained network into an empty folder;
    returns its rdf.yaml. image: an RGB uint8 image for the test tensors
    and the cover (see test_region); training_data: a key of TRAINING_DATA. The test outputs
    are the JAX network's on the pre-processed test inputs."""
    check_exportable(config)
    folder = Path(folder)
    region = test_region(image, config)
    raw = package_inputs(region, config)
    ready = preprocessed(raw)
    x = np.concatenate([ready[n] for n in input_names(config.model.model)], axis=1).transpose(0, 2, 3, 1)
    probabilities = Predictor(network).bind(network)(x)  # what nucjax predicts with
    for tensor, values in raw.items():
        _write_array(folder / f"test_input_{tensor}.npy", values)
    _write_array(folder / f"test_output_{OUTPUT}.npy", probabilities.transpose(0, 3, 1, 2))
    (folder / WEIGHTS).write_bytes(network_graph(network).SerializeToString())
    labels = instances(probabilities[0], config.postprocess.for_image(region[..., :3]), region)
    cover = side_by_side([contour_overlay(region[..., :3], labels), probability_image(probabilities[0])], height=256)
    write_overlay(folder / "cover.png", cover)
    (folder / "README.md").write_text(documentation(config, name, score, training_data))
    rdf = folder / RDF
    rdf.write_text(yaml.safe_dump(describe(config, name, score, provenance or {}, training_data), sort_keys=False))
    return rdf


@dataclass(frozen=True)
class Package:
    """What nucjax reads from a package: its config, name, score and ONNX graph."""

    path: Path
    config: ExperimentConfig
    name: str
    score: float
    graph: bytes


def _reader(path: Path):
    """read(name) -> bytes of a file of a package folder or zip."""
    if path.is_dir():
        return lambda name: (path / name).read_bytes()
    return zipfile.ZipFile(path).read


def read_package(path) -> Package:
    """The nucjax model of a package written by write_package; PackageError when it is not one."""
    path = Path(path)
    try:
        read = _reader(path)
        rdf = yaml.safe_load(io.BytesIO(read(RDF)))
        settings = rdf["config"]["nucjax"]
        config = ExperimentConfig.from_dict(settings["experiment"])
        graph = read(rdf["weights"]["onnx"]["source"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, yaml.YAMLError) as err:
        raise PackageError(f"{path}: not a nucjax bioimage.io package ({type(err).__name__}: {err})") from None
    return Package(path.absolute(), config, str(settings.get("model", path.stem)), float(settings.get("validation_score", float("nan"))), graph)


def package_forward(package: Package):
    """The package's network as a forward (see onnx_graph.onnx_forward)."""
    return onnx_forward(package.graph, package.config.model.model)


