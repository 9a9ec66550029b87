"""Segmenting images from Python: a Segmenter turns an RGB image into one
label per nucleus, with one model or an ensemble, at the nucleus scale
each model was trained for.

    from nucjax import Segmenter, read_image
    segmenter = Segmenter.load("runs/train")  # checkpoint, run, experiment or list of checkpoints
    labels = segmenter.segment(read_image("cells.png"))  # (H, W) int32, 0 is background

This is the one path from checkpoint to probability maps: the prediction
commands, ensembles and the training loop's validation all go through
Model.maps and Segmenter.member_maps.

Scale (see nucjax.scale): 'native' predicts images as they are; a number
rescales every image by it; 'auto' estimates the median nucleus diameter
with a first pass of the first model (a small pyramid), shrinks an image
whose nuclei are larger than the diameter each model was trained at down
to it, and keeps the native first pass when that scale is close to 1. 'model' (the default) is 'auto'
for models trained at a canonical diameter, 'native' for the others.
A set of images (a folder, a validation split) is planned first
(Segmenter.planned): an image whose own estimate lies more than 3x from
the median diameter of its acquisition (the images of its experiment
among them) takes that median, so one image's misjudged first pass cannot
flip it (nucjax.scale.acquisition_diameters).
Post-processing runs once on the combined maps at the working scale (the
first model's), with the settings calibrated for the image's kind, and the
labels are mapped back to every original pixel.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from nucjax.combine import FUSED, combine, group_quorum, rescaled
from nucjax.fusion import fuse_instances
from nucjax.config import ExperimentConfig
from nucjax.data.split import acquisition_groups, image_descriptor, image_kind
from nucjax.postprocess import PostprocessConfig, instances
from nucjax.scale import (
    NATIVE_DIAMETER,
    acquisition_diameters,
    median_diameter,
    pyramid,
    pyramid_diameter,
    resize_image,
    resize_labels,
    restore_labels,
    scale_to,
    scaled_shape,
    snapped,
)

SCALE_MODES = ("model", "native", "auto")
#: What runs the networks: JAX, or ONNX Runtime on the graph nucjax.export
#: writes (the export extra); everything around them is shared.
BACKENDS = ("jax", "onnx")
#: Whose first pass decides an image's scale with 'auto': its acquisition's
#: (the images of its group, see Segmenter.planned) or its own.
SCALE_BY = ("acquisition", "image")
#: The most bytes of first-pass maps a plan keeps for the images that stay
#: at native scale; past it they are predicted again (the same maps, a pass more).
FIRST_PASS_CACHE = 1 << 30
#: How the first pass finds the nuclei it sizes: fixed, not the calibrated
#: post-processing, so an image's scale depends on the weights alone.
#: Calibration runs on maps made at that scale; were the scale to follow
#: the thresholds calibration then picks, a checkpoint would be validated
#: at one scale and predict at another.
SIZING = PostprocessConfig()


def parse_scale(value) -> str | float:
    """'model', 'native', 'auto' or a positive factor; ValueError otherwise."""
    if isinstance(value, str) and value in SCALE_MODES:
        return value
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be one of {', '.join(SCALE_MODES)} or a positive number, got '{value}'") from None
    if not factor > 0 or not np.isfinite(factor):
        raise ValueError(f"a scale factor must be a positive number, got {value}")
    return factor


def parse_scales(value) -> tuple[float, ...]:
    """Multi-scale factors from a tuple or '0.75,1,1.5': positive numbers; ValueError otherwise."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        factors = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be positive numbers like 0.75,1,1.5, got '{value}'") from None
    if not factors or not all(f > 0 and np.isfinite(f) for f in factors):
        raise ValueError(f"scales must be positive numbers like 0.75,1,1.5, got '{value}'")
    return factors


def scales_text(scales) -> str:
    """Multi-scale factors as parse_scales reads them: '0.75,1,1.5'."""
    return ",".join(f"{factor:g}" for factor in scales)


@dataclass(frozen=True)
class Model:
    """One trained U-Net: its config (with calibrated post-processing) and
    forward, (B, H, W, C) float32 -> (B, H, W, K) probabilities."""

    name: str
    path: Path | None
    config: ExperimentConfig
    score: float  # its validation score when it was trained
    forward: Callable

    @property
    def threshold(self) -> float:
        return self.config.postprocess.threshold

    @property
    def diameter(self) -> float:
        """The nucleus diameter (px) the model saw most in training."""
        inputs = self.config.inputs
        return inputs.diameter if inputs.rescales else NATIVE_DIAMETER

    def inputs(self, image: np.ndarray) -> np.ndarray:
        from nucjax.inputs import model_inputs

        return model_inputs(image, self.config.model.model, self.config.inputs)

    def maps(self, inputs: np.ndarray, scale: float = 1.0, tta: bool = False) -> np.ndarray:
        """(h, w, K) probabilities of an image's model inputs rescaled by scale."""
        from nucjax.inference import predict_image

        if scale != 1.0:
            inputs = resize_image(inputs, scaled_shape(inputs.shape[:2], scale))
        return predict_image(self.forward, inputs, self.config.inputs, self.config.model.multiple, tta)


def model_name(path: Path) -> str:
    """trial/checkpoint, or run/epoch: short and unique within an ensemble."""
    path = Path(path)
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{parent.name}/{path.name}"


def is_package(path) -> bool:
    """A bioimage.io package (nucjax.export writes them): a .zip, or a folder with an rdf.yaml."""
    path = Path(path)
    return path.suffix == ".zip" or (path / "rdf.yaml").is_file()


def load_model(path: Path, backend: str = "jax") -> Model:
    """A Model from a checkpoint folder (or a training run: its best), its
    network run by JAX or, with backend 'onnx', by ONNX Runtime; or from a
    bioimage.io package nucjax.export wrote (its ONNX weights, whatever
    the backend). CheckpointError when it cannot be used."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    from nucjax.checkpoints import CheckpointError, load_model as load_checkpoint

    if is_package(path):
        from nucjax.bioimage import PackageError, package_forward, read_package

        try:
            package = read_package(path)
        except PackageError as err:
            raise CheckpointError(str(err)) from None
        return Model(package.name, package.path, package.config, package.score, package_forward(package))
    network, info = load_checkpoint(path)
    if backend == "onnx":
        from nucjax.models.onnx_graph import network_graph, onnx_forward

        forward = onnx_forward(network_graph(network).SerializeToString(), info.config.model.model)
    else:
        from nucjax.inference import Predictor

        forward = Predictor(network).bind(network)
    return Model(model_name(info.path), info.path, info.config, info.score, forward)


def ensemble_postprocess(models) -> PostprocessConfig:
    """An uncalibrated ensemble's post-processing: the best model's, with the
    body threshold at 0.5, where combine puts every model's own threshold
    (its shared one: a kind's own thresholds do not carry over; calibration
    finds the ensemble's)."""
    best = max(models, key=lambda m: m.score)
    config = dataclasses.replace(best.config.postprocess, threshold=0.5, by_kind=())
    if min(m.config.model.out_channels for m in models) < 2 and config.method == "border":
        config = dataclasses.replace(config, method="auto")
    return config


def fingerprint(image: np.ndarray) -> str:
    """A key for an image's pixels: what a scale plan looks images up by."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Sizing:
    """An image's planned scale: the nucleus diameter it is segmented for
    (None: nothing found, native) and the native first pass of the model
    named `sizer` when it was kept (reused when that model predicts the
    image at native scale)."""

    diameter: float | None
    first_pass: np.ndarray | None = None
    sizer: str = ""


@dataclass(frozen=True)
class Segmenter:
    """Models and how their maps become nuclei. One model: its own maps and
    calibrated post-processing. Several (or ensemble=True): each model's
    map rescaled so its threshold sits at 0.5, combined (see
    nucjax.combine), and post-processed once with `postprocess`; or, with
    combine 'nuclei', each rescaled map post-processed with `postprocess`
    and the members' nuclei fused (nucjax.fusion)."""

    models: tuple[Model, ...]
    postprocess: PostprocessConfig
    combine: str = "mean"
    quorum: int | None = None
    scale: str | float = "model"
    tta: bool = False
    ensemble: bool = False  # combine even one model's map (its post-processing was tuned on combined maps)
    scale_by: str = "acquisition"  # see SCALE_BY; takes effect through planned()
    # Multi-scale test-time augmentation: each model also predicts at these factors of its
    # scale; the maps, brought to the working size, are combined by their median, so a
    # pixel is nucleus where most scales agree (the agreement filter). (1.0,): off.
    scales: tuple[float, ...] = (1.0,)
    plan: dict | None = dataclasses.field(default=None, repr=False)  # {fingerprint: Sizing}, from planned()

    def __post_init__(self):
        if not self.models:
            raise ValueError("a Segmenter needs at least one model")
        if self.scale_by not in SCALE_BY:
            raise ValueError(f"scale_by must be one of {', '.join(SCALE_BY)}, got '{self.scale_by}'")
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "scale", parse_scale(self.scale))
        object.__setattr__(self, "scales", parse_scales(self.scales))

    @classmethod
    def of(cls, models, postprocess: PostprocessConfig | None = None, **options) -> "Segmenter":
        """A Segmenter of loaded models; postprocess defaults to the one
        model's own, or ensemble_postprocess for several."""
        models = tuple(models)
        options.setdefault("ensemble", len(models) > 1)
        if postprocess is None:
            postprocess = ensemble_postprocess(models) if options["ensemble"] else models[0].config.postprocess
        return cls(models, postprocess, **options)

    @classmethod
    def load(cls, path, backend: str = "jax", **options) -> "Segmenter":
        """From a checkpoint, a training run (its best checkpoint), a search
        experiment (the ensemble ensemble.predict chose for it, else its
        best checkpoint) or a list of checkpoints (their mean).

        A bioimage.io package (nucjax.export's zip) loads too, running its
        ONNX weights. backend: 'jax' or 'onnx' (ONNX Runtime, the export
        extra), see BACKENDS.

        options: combine, quorum, scale, tta, scales (an experiment's
        ensemble keeps the scales it was calibrated at unless given).
        Raises CheckpointError or
        ExperimentError naming what could not be used.
        """
        from nucjax.experiment import is_experiment, read_experiment

        if isinstance(path, (list, tuple)):
            return cls.of([load_model(p, backend) for p in path], **options)
        if is_experiment(path):
            experiment = read_experiment(path)
            plan = experiment.read_ensemble()
            if plan is None:
                return cls.of([load_model(experiment.best_checkpoint(), backend)], **options)
            models = [load_model(p, backend) for p in plan["members"]]
            settings = {"combine": plan["combine"], "quorum": plan.get("quorum"), "ensemble": True,
                        "scales": tuple(plan.get("scales") or (1.0,)), **options}
            return cls.of(models, PostprocessConfig(**plan["postprocess"]), **settings)
        return cls.of([load_model(path, backend)], **options)

    def replace(self, **changes) -> "Segmenter":
        return dataclasses.replace(self, **changes)

    def scale_mode(self) -> str | float:
        """'native', 'auto' or a factor: 'model' resolved by the first model."""
        if self.scale != "model":
            return self.scale
        return "auto" if self.models[0].config.inputs.rescales else "native"

    def estimate_diameter(self, image: np.ndarray, inputs: np.ndarray | None = None,
                          sizing: PostprocessConfig = SIZING) -> tuple[float | None, np.ndarray]:
        """(median nucleus diameter in px or None when nothing is found, the
        first model's maps at native scale). The first model predicts a
        small pyramid (see nucjax.scale); the level where the nuclei look
        the size it was trained at gives the estimate. sizing: how the
        nuclei it measures are found (SIZING; other values are for measuring
        what that choice is worth)."""
        first = self.models[0]
        inputs = first.inputs(image) if inputs is None else inputs
        found, first_pass = {}, None
        for scale in pyramid(image.shape[:2]):
            maps = first.maps(inputs, scale, self.tta)
            first_pass = maps if scale == 1.0 else first_pass
            found[scale] = median_diameter(instances(maps, sizing))
        return pyramid_diameter(found, first.diameter), first_pass

    def planned(self, images: Iterable[np.ndarray], cache_bytes: int = FIRST_PASS_CACHE) -> "Segmenter":
        """This segmenter with the scale of each of `images` decided by its
        acquisition: every image's first pass finds its diameter, images are
        grouped by experiment (kind, size and look: nucjax.data.split's
        acquisition_groups, over these images only) and each keeps its
        own diameter unless its group's median outvotes it
        (nucjax.scale.acquisition_diameters).
        Segmenting one of them then costs no second first pass. Itself when
        the scale is not 'auto' or scale_by is 'image'; images it was not
        planned for estimate their own."""
        if self.scale_mode() != "auto" or self.scale_by == "image":
            return self
        found, descriptors, kept, kept_bytes = {}, {}, {}, 0
        for image in images:
            key = fingerprint(image)
            if key in found:
                continue
            found[key], first_pass = self.estimate_diameter(image)
            descriptors[key] = image_descriptor(image)
            if kept_bytes + first_pass.nbytes <= cache_bytes:
                kept[key], kept_bytes = first_pass, kept_bytes + first_pass.nbytes
        keys = list(found)
        groups = acquisition_groups(keys, descriptors=[descriptors[key] for key in keys])
        diameters = acquisition_diameters([found[key] for key in keys], [groups[key] for key in keys])
        # Only an image that stays at native scale reuses its first pass.
        first = self.models[0]
        return self.replace(plan={key: Sizing(d, kept.get(key) if snapped(scale_to(d, first.diameter)) == 1.0 else None,
                                              first.name) for key, d in zip(keys, diameters)})

    def sizing(self, image: np.ndarray, inputs: np.ndarray | None = None) -> Sizing:
        """The image's planned Sizing, or its own first pass's."""
        planned = self.plan.get(fingerprint(image)) if self.plan else None
        return planned if planned is not None else Sizing(*self.estimate_diameter(image, inputs), self.models[0].name)

    def member_maps(self, image: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """(working scale, every model's (h, w, K) maps at that scale) for
        an (H, W, 3) uint8 image: with several scales, the median of each
        model's maps at them (scale_maps)."""
        working, at_scales = self.scale_maps(image)
        return working, [scales_median(maps) for maps in at_scales]

    def scale_maps(self, image: np.ndarray) -> tuple[float, list[list[np.ndarray]]]:
        """(working scale, every model's maps at each of self.scales, each
        brought to the working size), before the median that member_maps takes."""
        mode = self.scale_mode()
        first = self.models[0]
        cache: dict = {}

        def inputs_of(model):
            key = (model.config.model.model, model.config.inputs.preprocessing, model.config.inputs.normalisation)
            if key not in cache:
                cache[key] = model.inputs(image)
            return cache[key]

        first_pass, diameter = None, None
        if mode == "auto":
            sizing = self.sizing(image, inputs_of(first))
            diameter = sizing.diameter
            first_pass = sizing.first_pass if sizing.sizer == first.name else None
        working = snapped(scale_to(diameter, first.diameter)) if mode == "auto" else (1.0 if mode == "native" else mode)
        shape = scaled_shape(image.shape[:2], working)
        maps = []
        for model in self.models:
            scale = working if model is first or mode != "auto" else snapped(scale_to(diameter, model.diameter))
            at_scales = []
            for factor in self.scales:
                if model is first and scale * factor == 1.0 and first_pass is not None:
                    found = first_pass
                else:
                    found = model.maps(inputs_of(model), scale * factor, self.tta)
                at_scales.append(found if found.shape[:2] == shape else resize_image(found, shape))
            maps.append(at_scales)
        return working, maps

    def combined(self, maps: list[np.ndarray], models=None) -> np.ndarray:
        """One map from the maps of `models` (default: all), in their order."""
        models = self.models if models is None else models
        if len(models) == 1 and not self.ensemble:
            return maps[0]
        return combine(maps, [m.threshold for m in models], self.combine, group_quorum(self.quorum, len(models)))

    def fuses(self, members: int) -> bool:
        """Whether `members` models of this segmenter fuse their nuclei (combine 'nuclei') rather than
        post-process one combined map."""
        return self.combine in FUSED and (members > 1 or self.ensemble)

    def nuclei(self, image: np.ndarray, scale: float, maps: list[np.ndarray], postprocess: PostprocessConfig | None = None,
               models=None) -> np.ndarray:
        """Nuclei of the maps of `models` (default all; maps in their order)
        at the working scale, on the image's own pixels: the combined map
        post-processed once, or each member's nuclei fused (combine 'nuclei')."""
        models = self.models if models is None else models
        if not self.fuses(len(models)):
            return self.labels(image, scale, self.combined(maps, models), postprocess)
        found = [self.labels(image, scale, rescaled(m, model.threshold), postprocess) for m, model in zip(maps, models)]
        return fuse_instances(found, group_quorum(self.quorum, len(models)))

    def labels(self, image: np.ndarray, scale: float, maps: np.ndarray, postprocess: PostprocessConfig | None = None) -> np.ndarray:
        """Nuclei of combined maps at the working scale, on the image's own
        pixels, post-processed with the settings for the image's kind."""
        postprocess = (postprocess or self.postprocess).for_image(image)
        picture = image if scale == 1.0 else resize_image(image, maps.shape[:2])
        found = instances(maps, postprocess, picture)
        if scale == 1.0:
            return found
        body = resize_image(np.ascontiguousarray(maps[..., 0], dtype=np.float32), image.shape[:2])
        return restore_labels(found, body, postprocess.threshold)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, K) combined probabilities (body, then border) at the image's size."""
        scale, maps = self.member_maps(image)
        combined = self.combined(maps)
        return combined if scale == 1.0 else resize_image(combined, image.shape[:2])

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int32 labels of an (H, W, 3) uint8 RGB image: 0 background, 1..n nuclei."""
        return self.segment_at_scale(image)[1]

    def segment_at_scale(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """(the working scale the image was segmented at, segment's labels)."""
        scale, maps = self.member_maps(image)
        return scale, self.nuclei(image, scale, maps)


def scales_median(maps: list[np.ndarray]) -> np.ndarray:
    """One model's maps at several scales (same size) as one: their median,
    so a pixel is nucleus where most scales agree; one map is itself."""
    return maps[0] if len(maps) == 1 else np.median(np.stack(maps), axis=0).astype(np.float32)


EMPTY = np.zeros((1, 1), np.int32)  # an unreadable image's prediction: one empty row


@dataclass(frozen=True)
class ImageResult:
    """One image of a folder: its labels (EMPTY when it could not be read,
    then error says why), the other outcomes a segment function gave, and
    their Kaggle scores where the truth is known."""

    image_id: str
    labels: np.ndarray
    image: np.ndarray | None = None
    truth: np.ndarray | None = None
    outcomes: dict | None = None
    scores: dict | None = None
    error: str | None = None
    notes: tuple = ()


def readable_samples(sources, labelled: bool | None = False) -> Iterator:
    """The samples of `sources` that can be read (by default without their
    masks), as segment_folder reads them; the unreadable are left to it to report."""
    from nucjax.data import DataError
    from nucjax.data.kaggle import load_sample

    for source in sources:
        try:
            yield load_sample(source, labelled=labelled)[0]
        except DataError:
            continue


def folder_images(sources) -> Iterator[np.ndarray]:
    """The images of `sources` that can be read, as segment_folder reads them."""
    return (sample.image for sample in readable_samples(sources))


def segment_folder(segment, sources: Iterable, *, strict: bool = False, truths: dict | None = None) -> Iterator[ImageResult]:
    """Segment every image of `sources` (nucjax.data SampleSource), in order.

    segment(image) returns labels, or {name: labels} whose first entry is
    the one submitted (the others are scored too). An unreadable image
    gives an ImageResult with EMPTY labels and the reason, or, with
    strict, a DataError naming it. The truth is truths[image_id] when
    truths is given, else the image's own masks.
    """
    from nucjax.data import DataError
    from nucjax.data.kaggle import load_sample
    from nucjax.metrics import image_score

    for source in sources:
        try:
            sample, notes = load_sample(source, labelled=None)
        except DataError as err:
            if strict:
                raise DataError(f"{err} (strict mode: fix or remove it)") from None
            yield ImageResult(source.image_id, EMPTY, error=str(err))
            continue
        if strict and notes:
            raise DataError(f"{notes[0]} (strict mode: fix or remove it)")
        outcome = segment(sample.image)
        outcomes = outcome if isinstance(outcome, dict) else {"": outcome}
        truth = truths.get(sample.image_id) if truths is not None else sample.labels
        scores = {name: image_score(truth, labels).score for name, labels in outcomes.items()} if truth is not None else {}
        yield ImageResult(sample.image_id, next(iter(outcomes.values())), sample.image, truth, outcomes, scores,
                          notes=tuple(str(n) for n in notes))


@dataclass(frozen=True)
class LabelledMaps:
    """A labelled image's member maps at the working scale, for calibration."""

    image: np.ndarray
    truth: np.ndarray
    scale: float
    maps: list

    @property
    def working_truth(self) -> np.ndarray:
        return resize_labels(self.truth, self.maps[0].shape[:2])


def labelled_maps(segmenter: Segmenter, samples, progress=lambda items, description: items) -> list[LabelledMaps]:
    """Every labelled sample's member maps, as prediction makes them: the
    scale planned over these samples (as nucjax.predict plans over the
    folder it is given), float32 (a coarser copy would move pixels across
    a threshold, and the score with them). progress(items, description)
    wraps each of the two passes over the samples (a progress bar)."""
    return [LabelledMaps(sample.image, sample.labels, scale, [scales_median(maps) for maps in at_scales])
            for sample, scale, at_scales in labelled_scale_maps(segmenter, samples, progress)]


def labelled_scale_maps(segmenter: Segmenter, samples, progress=lambda items, description: items) -> Iterator[tuple]:
    """labelled_maps before the median of the scales: (sample, working
    scale, every model's maps at each of segmenter.scales) for each sample,
    one at a time, the scale planned over these samples."""
    samples = list(samples)
    segmenter = segmenter.planned(progress([s.image for s in samples], "sizing nuclei"))
    for sample in progress(samples, "validation maps"):
        yield (sample, *segmenter.scale_maps(sample.image))


def _tuned_maps(segmenter: Segmenter, labelled: list[LabelledMaps], members: list[int]) -> list[tuple[LabelledMaps, np.ndarray]]:
    """(labelled image, map) pairs the post-processing of the models at
    positions `members` is tuned on: each image's combined map, or, where
    they fuse their nuclei, each member's own map of each image (what the
    post-processing then runs on)."""
    models = [segmenter.models[i] for i in members]
    if segmenter.fuses(len(members)):
        return [(item, rescaled(item.maps[i], segmenter.models[i].threshold)) for item in labelled for i in members]
    return [(item, segmenter.combined([item.maps[i] for i in members], models)) for item in labelled]


def calibrate_segmenter(segmenter: Segmenter, labelled: list[LabelledMaps], members=None,
                        base: PostprocessConfig | None = None) -> tuple[PostprocessConfig, list[float]]:
    """(post-processing tuned on the labelled maps, each image's Kaggle score
    with it) for the combination of the models at positions `members`
    (default all). Tuned at the working scale against the truth mapped
    there; scored as prediction scores, on each image's own pixels."""
    from nucjax.postprocess import calibrate

    members = list(range(len(segmenter.models))) if members is None else list(members)
    if base is None:
        models = [segmenter.models[i] for i in members]
        base = ensemble_postprocess(models) if segmenter.ensemble or len(models) > 1 else models[0].config.postprocess
    tuned = _tuned_maps(segmenter, labelled, members)
    postprocess, _ = calibrate([maps for _, maps in tuned], [item.working_truth for item, _ in tuned], base,
                               kinds=[image_kind(item.image) for item, _ in tuned])
    return postprocess, labelled_scores(segmenter, labelled, postprocess, members)


def labelled_scores(segmenter: Segmenter, labelled: list[LabelledMaps], postprocess: PostprocessConfig,
                    members=None) -> list[float]:
    """Each image's Kaggle score on its own pixels with that post-processing,
    for the combination of the models at positions `members` (default all)."""
    from nucjax.metrics import image_score

    members = list(range(len(segmenter.models))) if members is None else list(members)
    models = [segmenter.models[i] for i in members]
    return [image_score(item.truth, segmenter.nuclei(item.image, item.scale, [item.maps[i] for i in members], postprocess,
                                                     models)).score
            for item in labelled]
