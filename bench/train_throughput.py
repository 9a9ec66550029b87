"""Benchmark: training throughput of nucjax's U-Nets on this CPU, both
XLA convolution paths measured in one run.

For each convolution path (jaxlib's default, YNNPACK for convolutions of
more than 16 channels, and XLA's Eigen path, nucjax's default: see
nucjax.cli.EIGEN_CONVOLUTIONS), model and size, at batch 8, images/s of:

- input pipeline: numpy training batches alone (crops rescaled to the
  canonical diameter, symmetries, elastic, intensity, recoloured variants,
  body + border targets), from the synthetic set or --data;
- step: a full train step (forward, loss, backward, Adam) on a fixed batch;
- end to end: the pipeline feeding the step, as training runs;

and the GFLOP/s the step achieves (XLA's cost analysis of the compiled
step) beside this CPU's FP32 peak, computed from the clock read in
/proc/cpuinfo (Zen 2: two 256-bit FMA units, 32 FLOP per cycle per core).
With PyTorch installed (not a dependency: give it its own environment,
`pip install -e . torch==2.13.0`), the same standard U-Net's step in
PyTorch is a reference column.

    python bench/train_throughput.py [--steps 10] [--sizes 128 256] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PATHS = {"ynnpack (jaxlib default)": "", "eigen (nucjax default)": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}
FLOP_PER_CYCLE = 32  # per core, FP32: two 256-bit FMA units (AVX2), 8 lanes, 2 FLOP each


def time_steps(step, steps: int) -> float:
    """Seconds per step, after two warm-up steps."""
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def jax_step(model_config, size: int, batch: int):
    """(a function running one train step on a batch (x, y), a fixed batch, the step's FLOPs)."""
    import jax
    import jax.numpy as jnp

    from nucjax.config import ExperimentConfig
    from nucjax.inputs import InputConfig
    from nucjax.models.unet import build_model
    from nucjax.train.loop import make_optimizer, make_train_step

    config = ExperimentConfig(model=model_config, inputs=InputConfig(size, "crop", border=model_config.out_channels == 2))
    model = build_model(model_config)
    optimizer = make_optimizer(model, config.train)
    train_step = make_train_step(config)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, size, size, model_config.in_channels), np.float32))
    y = jnp.asarray((rng.random((batch, size, size, model_config.out_channels)) > 0.5).astype(np.float32))
    cost = train_step.lower(model, optimizer, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (lambda xb, yb: jax.block_until_ready(train_step(model, optimizer, xb, yb))), (x, y), float(cost.get("flops", 0.0))


def torch_step(model_config, size: int, batch: int):
    """One train step of the same standard U-Net in PyTorch (channels-last)."""
    import torch
    from torch import nn

    def block(c_in, c_out):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=0.1), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=0.1), nn.ReLU(inplace=True),
        )

    class TorchUNet(nn.Module):
        def __init__(self, cfg):
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


def batches(model: str, size: int, batch: int, steps: int, data: Path | None):
    """The numpy training batches of the default config for model and size."""
    from nucjax.cli import load_data
    from nucjax.config import from_params
    from nucjax.inputs import training_batches, training_examples

    config = from_params({"model": model, "size": size, "batch_size": batch})
    samples = load_data(data, labelled=True).samples
    examples = training_examples(samples, model, config.inputs, config.augment)
    return lambda: training_batches(0, 1, steps, batch, examples, config.inputs, config.augment)


def measure(args) -> None:
    """The child: one convolution path (XLA_FLAGS is set by the parent), every model and size, JSON lines."""
    from nucjax.models.unet import UNetConfig

    for model in args.models:
        config = UNetConfig(model, 4, args.base_filters, out_channels=2)
        for size in args.sizes:
            epoch = batches(model, size, args.batch, args.steps, args.data)
            list(epoch())  # warm the caches
            started = time.perf_counter()
            made = sum(len(x) for x, _ in epoch())
            pipeline = made / (time.perf_counter() - started)
            step, (x, y), flops = jax_step(config, size, args.batch)
            step_seconds = time_steps(lambda: step(x, y), args.steps)
            step(*next(iter(epoch())))  # compile for the pipeline's dtypes
            started = time.perf_counter()
            for xb, yb in epoch():
                step(xb, yb)
            end_to_end = args.steps * args.batch / (time.perf_counter() - started)
            print(json.dumps({"model": model, "size": size, "pipeline": pipeline, "step": args.batch / step_seconds,
                              "end_to_end": end_to_end, "gflops": flops / step_seconds / 1e9}), flush=True)


def cpu_peak_gflops() -> tuple[float, float, int]:
    """(FP32 peak GFLOP/s, clock GHz, cores) from /proc/cpuinfo and the cores this process may use."""
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
    ghz = (sum(mhz) / len(mhz) / 1000) if mhz else float("nan")
    cores = len(os.sched_getaffinity(0))
    return cores * FLOP_PER_CYCLE * ghz, ghz, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--models", nargs="+", default=["standard", "extended"])
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--data", type=Path, help="training images for the pipeline (default: the synthetic set)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(args)

    peak, ghz, cores = cpu_peak_gflops()
    print(f"{cores} cores at {ghz:.2f} GHz: FP32 peak {peak:.0f} GFLOP/s; batch {args.batch}, {args.steps} steps")
    print(f"{'path':<26}{'model':<10}{'size':>5}{'pipeline':>10}{'step':>8}{'end to end':>12}{'e2e/step':>10}{'GFLOP/s':>9}{'of peak':>9}  (img/s)")
    rows = {}
    for path, flags in PATHS.items():
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        command = [sys.executable, __file__, "--child", *sys.argv[1:]]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        for line in done.stdout.splitlines():
            r = json.loads(line)
            rows[(path, r["model"], r["size"])] = r
            print(f"{path:<26}{r['model']:<10}{r['size']:>5}{r['pipeline']:>10.1f}{r['step']:>8.1f}{r['end_to_end']:>12.1f}"
                  f"{r['end_to_end'] / r['step']:>10.2f}{r['gflops']:>9.1f}{r['gflops'] / peak:>9.0%}", flush=True)
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: no reference column)")
        return
    from nucjax.models.unet import UNetConfig

    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, standard U-Net step:")
    for size in args.sizes:
        seconds = time_steps(torch_step(UNetConfig("standard", 4, args.base_filters, out_channels=2), size, args.batch), args.steps)
        print(f"  {size} px: {args.batch / seconds:.1f} img/s")


if __name__ == "__main__":
    main()
