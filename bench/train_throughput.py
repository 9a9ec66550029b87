"""Benchmark: train-step throughput of nucjax's U-Nets, beside the same
standard U-Net in PyTorch, in one run on this CPU.

For each model and size: images/s of a full train step (forward, loss,
backward, Adam) at batch 8, and the GFLOP/s achieved, from XLA's cost
analysis of the compiled step (the PyTorch model does the same work). PyTorch
is not a dependency: give the benchmark its own environment.

    python -m venv bench/.venv && . bench/.venv/bin/activate
    pip install -e . torch==2.13.0
    python bench/train_throughput.py [--steps 10] [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from nucjax.config import ExperimentConfig
from nucjax.inputs import InputConfig
from nucjax.models.unet import UNetConfig, build_model
from nucjax.train.loop import make_optimizer, make_train_step


def time_steps(step, steps: int) -> float:
    """Seconds per step, after two warm-up steps."""
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def jax_step(model_config: UNetConfig, size: int, batch: int):
    """(a function running one train step, the step's FLOPs)."""
    config = ExperimentConfig(model=model_config, inputs=InputConfig(size, "crop", border=model_config.out_channels == 2))
    model = build_model(model_config)
    optimizer = make_optimizer(model, config.train)
    train_step = make_train_step(config)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, size, size, model_config.in_channels), np.float32))
    y = jnp.asarray((rng.random((batch, size, size, model_config.out_channels)) > 0.5).astype(np.float32))
    cost = train_step.lower(model, optimizer, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (lambda: jax.block_until_ready(train_step(model, optimizer, x, y))), float(cost.get("flops", 0.0))


def torch_step(model_config: UNetConfig, size: int, batch: int):
    """One train step of the same standard U-Net in PyTorch (channels-last)."""
    import torch
    from torch import nn

    def block(c_in, c_out):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=0.1), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=0.1), nn.ReLU(inplace=True),
        )

    class TorchUNet(nn.Module):
        def __init__(self, cfg: UNetConfig):
            super().__init__()
            widths = [cfg.base_filters * 2**i for i in range(cfg.depth)]
            self.down = nn.ModuleList(block(c, w) for c, w in zip([cfg.in_channels] + widths[:-1], widths))
            self.bottom = block(widths[-1], cfg.base_filters * 2**cfg.depth)
            below = [cfg.base_filters * 2**cfg.depth] + widths[::-1][:-1]
            self.ups = nn.ModuleList(nn.ConvTranspose2d(b, w, 2, stride=2) for b, w in zip(below, widths[::-1]))
            self.up_blocks = nn.ModuleList(block(2 * w, w) for w in widths[::-1])
            self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

        def forward(self, x):
            skips = []
            for down in self.down:
                x = down(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottom(x)
            for up, blk, skip in zip(self.ups, self.up_blocks, reversed(skips)):
                x = blk(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    model = TorchUNet(model_config).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch, model_config.in_channels, size, size), np.float32)).to(memory_format=torch.channels_last)
    y = torch.from_numpy((rng.random((batch, model_config.out_channels, size, size)) > 0.5).astype(np.float32))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        probs = torch.sigmoid(logits)
        dice = 1 - (2 * (probs * y).sum((0, 2, 3)) + 1) / (probs.sum((0, 2, 3)) + y.sum((0, 2, 3)) + 1)
        loss = (nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean((0, 2, 3)) + dice).sum()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--base-filters", type=int, default=16)
    args = parser.parse_args()
    import torch

    threads = torch.get_num_threads()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} with {threads} threads; batch {args.batch}")
    print(f"{'model':<10}{'size':>6}{'jax img/s':>12}{'jax GFLOP/s':>13}{'torch img/s':>13}{'jax/torch':>11}")
    for model in ("standard", "extended"):
        config = UNetConfig(model, 4, args.base_filters, out_channels=2)
        for size in args.sizes:
            run, flops = jax_step(config, size, args.batch)
            jax_seconds = time_steps(run, args.steps)
            line = f"{model:<10}{size:>6}{args.batch / jax_seconds:>12.1f}{flops / jax_seconds / 1e9:>13.1f}"
            if model == "standard":
                torch_seconds = time_steps(torch_step(config, size, args.batch), args.steps)
                line += f"{args.batch / torch_seconds:>13.1f}{torch_seconds / jax_seconds:>11.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
