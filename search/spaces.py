"""The search spaces, as data: what `python -m search.run --space NAME` varies.

Each space is a dict of Ray Tune distributions over the flat trial keys
that nucjax.config.from_params turns into an ExperimentConfig (check_space
refuses an unknown key before Ray starts). `smoke` versions shrink
everything for the embedded synthetic default, so a search finishes in
minutes on a laptop.

- standard: the standard U-Net. Everywhere: learning rate (log scale) and
  schedule, loss and its border weight, elastic deformation, the canonical
  nucleus diameter (16 px twice as often as 20) and its jitter,
  recolouring. With GPUs also: input
  size (128-512) and mode, width, border channel on or off; on a CPU
  those stay at base-16 U-Nets on 128 px crops with a border channel.
  GPU trials train in mixed precision (bfloat16), CPU trials in float32.
  Batch size is chosen by the memory estimate for the trial's device;
  post-processing is calibrated on validation after every epoch.
- extended: the same over the multi-arm U-Net.
- simple: the report's threshold model with the shared post-processing;
  no training, a cheap way to see the machinery work.
"""

from __future__ import annotations

from ray import tune

SPACES = ("standard", "extended", "simple")


def _unet_space(model: str, gpu: bool) -> dict:
    if gpu:
        sizes, modes, widths, borders, steps = [128, 256, 512], ["crop", "crop", "resize"], [16, 32], [True, False], 300
        precision = "bfloat16"  # mixed precision: tensor cores, half the activation memory
    else:
        # Two CPU cores afford base-16 U-Nets on 128 px native crops with a
        # border channel (what scored best); vary how they learn.
        sizes, modes, widths, borders, steps = [128], ["crop"], [16], [True], 150
        precision = "float32"  # a CPU has no fast bfloat16 convolutions
    return {
        "model": model,
        "size": tune.choice(sizes),
        "mode": tune.choice(modes),
        "base_filters": tune.choice(widths),
        "depth": 4,
        "learning_rate": tune.loguniform(8e-4, 4e-3),
        "schedule": tune.choice(["constant", "cosine", "step"]),
        "epochs": 8,
        "steps_per_epoch": steps,
        "loss": tune.choice(["bce_dice", "bce_dice", "bce"]),
        "border_weight": tune.choice([0.5, 1.0, 2.0]),
        "border": tune.choice(borders),
        "flips": True,
        "elastic": tune.choice([0.0, 0.3]),
        # 24 px left the space: the survivors trained at it scored 0.14/0.12 on the held-out 512x640
        # experiments (16 px: 0.35-0.49), and 16 beat 20 there in 30-minute runs (README, Measured).
        "diameter": tune.choice([16.0, 16.0, 20.0]),
        "scale_jitter": tune.choice([0.15, 0.25]),
        "recolour": tune.choice([0.3, 0.5]),
        "batch_size": None,  # from the memory estimate on a GPU, 8 on a CPU
        "postprocess": "auto",
        "precision": precision,
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
    from nucjax.config import check_params

    check_params(space)
