"""The search spaces, as data: what `python -m search.run --space NAME` varies.

Each space is a dict of Ray Tune distributions over the flat trial keys
that nucjax.config.from_params turns into an ExperimentConfig (check_space
refuses an unknown key before Ray starts); a key a space leaves out keeps
nucjax.train's default. `smoke` versions shrink everything for the
embedded synthetic default, so a search finishes in minutes on a laptop.

The U-Net spaces vary what changes the model's view of the data: input
size, width, depth, the model (extended: standard or multi-arm) and the
nucleus diameter images are scaled to. How they learn (learning rate,
schedule, loss, border weight, augmentation) stays at nucjax.train's
defaults: the ablations in docs/benchmarks.md found those choices within the noise,
and a space that draws them spends its budget on a lottery. The first
configuration of every search is `contender(space)`, nucjax.train's
defaults, so a search can lose to plain training only through noise.

| axis | CPU | GPU | why |
|---|---|---|---|
| size (crop side, px) | 128, 192, 256 | 128, 256, 512 | context around a nucleus against steps per second |
| base_filters | 16, 24, 32 | 16, 32, 48 | capacity |
| depth | 4, 5 | 4, 5 | receptive field |
| model (extended space) | standard, extended | same | the multi-arm U-Net's extra inputs |
| diameter (px) | 16, 16, 20 | same | the nucleus scale the images are brought to |

GPU trials train in mixed precision (bfloat16), CPU trials in float32.
Batch size is chosen by the memory estimate for the trial's device;
post-processing is calibrated on validation after every epoch.
- simple: the report's threshold model with the shared post-processing;
  no training, a cheap way to see the machinery work.
"""

from __future__ import annotations

import itertools

import numpy as np
from ray import tune
from ray.tune.search.sample import Categorical, Domain

from nucjax.config import check_params, default_params

SPACES = ("standard", "extended", "simple")
#: The values each varied axis takes: (CPU, GPU).
SIZES = ([128, 192, 256], [128, 256, 512])
WIDTHS = ([16, 24, 32], [16, 32, 48])
DEPTHS = [4, 5]
# 24 px left the space: the survivors trained at it scored 0.14/0.12 on the held-out 512x640
# experiments (16 px: 0.35-0.49), and 16 beat 20 there in 30-minute runs (docs/benchmarks.md).
DIAMETERS = [16.0, 16.0, 20.0]


def _unet_space(model: str, gpu: bool) -> dict:
    return {
        "model": tune.choice(["standard", "extended"]) if model == "extended" else model,
        "size": tune.choice(SIZES[gpu]),
        "mode": "crop",
        "base_filters": tune.choice(WIDTHS[gpu]),
        "depth": tune.choice(DEPTHS),
        "diameter": tune.choice(DIAMETERS),
        "epochs": 8,
        "steps_per_epoch": 300 if gpu else 150,
        "batch_size": None,  # from the memory estimate on a GPU, 8 on a CPU
        "postprocess": "auto",
        # Mixed precision on a GPU: tensor cores, half the activation memory; a CPU has no fast bfloat16 convolutions.
        "precision": "bfloat16" if gpu else "float32",
    }


def _unet_smoke(model: str) -> dict:
    return {
        **_unet_space(model, gpu=False),
        "size": 64,
        "mode": tune.choice(["crop", "resize"]),
        "base_filters": tune.choice([4, 8]),
        "depth": 3,
        "epochs": 5,
        "steps_per_epoch": 25,
        "batch_size": 4,
    }


def _simple_space() -> dict:
    return {
        "model": "simple",
        "postprocess": tune.choice(["cc", "distance"]),
        "threshold": tune.uniform(0.05, 0.5),  # on the preprocessed image, as a fraction of 255
        "min_size": tune.choice([0, 10, 20, 40]),
        "peak_radius": tune.choice([3, 5, 8]),
    }


def search_space(name: str, smoke: bool = False, gpu: bool = False) -> dict:
    """The Ray Tune param_space of a named space; smoke shrinks it for the
    synthetic default, gpu widens it (sizes up to 512, wider U-Nets)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space '{name}'; choose one of {', '.join(SPACES)}")
    if name == "simple":
        return _simple_space()
    return _unet_smoke(name) if smoke else _unet_space(name, gpu)


def check_space(space: dict) -> None:
    """Refuse a space with a key from_params does not know (ValueError),
    so a typo fails before any trial starts."""
    check_params(space)


def contender(space: dict) -> dict:
    """The values of a space's varied keys that nucjax.train uses with no
    flags: the first configuration a search trains. Where the space does
    not allow the default (the smoke space's tiny U-Nets), its first value."""
    defaults = default_params()
    point = {}
    for key, value in space.items():
        if not isinstance(value, Domain):
            continue
        if isinstance(value, Categorical):
            point[key] = defaults[key] if defaults.get(key) in value.categories else value.categories[0]
        else:
            point[key] = min(max(defaults[key], value.lower), value.upper)
    return point


def first_configurations(space: dict, count: int, seed: int, affordable=None) -> list[dict]:
    """The varied values of a search's first `count` configurations: the
    contender, then draws of the space (fixed by the seed), each new while
    the space has new ones: a repeat would spend a rung's slot on a score
    it already has. affordable(point), when given, keeps out the draws a
    rung could not train (search.trainable.affordable)."""
    rng = np.random.default_rng(seed)
    varied = {key: value for key, value in space.items() if isinstance(value, Domain)}
    chosen, seen, tries = [contender(space)], set(), 0
    seen.add(_key(chosen[0]))
    while len(chosen) < count and tries < 100 * count:
        point = {key: value.sample(random_state=rng) for key, value in varied.items()}
        tries += 1
        if _key(point) in seen or (affordable is not None and not affordable(point)):
            continue
        seen.add(_key(point))
        chosen.append(point)
    # A space with fewer new points than count repeats the ones it has, in order.
    return [chosen[i % len(chosen)] for i in range(count)]


def distinct_points(space: dict, affordable=None) -> int | None:
    """How many distinct configurations a space can draw (those affordable,
    when given), or None where a varied key is continuous."""
    varied = {key: value for key, value in space.items() if isinstance(value, Domain)}
    if not all(isinstance(value, Categorical) for value in varied.values()):
        return None
    points = {_key(dict(zip(varied, values))): dict(zip(varied, values))
              for values in itertools.product(*(value.categories for value in varied.values()))}
    return sum(1 for point in points.values() if affordable is None or affordable(point))


def _key(point: dict) -> tuple:
    return tuple(sorted((key, repr(value)) for key, value in point.items()))
