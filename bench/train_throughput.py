"""Benchmark: training throughput of nucjax's U-Nets, on this CPU (both
XLA convolution paths measured in one run) or on a GPU.

For each convolution path (on a CPU: jaxlib's default, YNNPACK for
convolutions of more than 16 channels, and XLA's Eigen path, nucjax's
default: see nucjax.cli.EIGEN_CONVOLUTIONS), model, size and precision,
images/s of:

- pipeline: batches drawn on the device alone (nucjax.batches.make_batch:
  crops rescaled by the scale jitter, symmetries, elastic, intensity,
  recoloured variants, body + border targets) from the resident training
  set (the synthetic set, or --data);
- step: a train step alone (forward, loss, backward, Adam) on a fixed batch;
- end to end: the train step that draws its own batch, as training runs,
  from the resident set, and streamed (each step's images sent from the host);

the GFLOP/s the step achieves (XLA's cost analysis of the compiled step)
beside the CPU's FP32 peak, computed from the clock read in /proc/cpuinfo
(Zen 2: two 256-bit FMA units, 32 FLOP per cycle per core), and on a GPU
the memory estimate (nucjax.models.memory) beside the measured peak. With
PyTorch installed (not a dependency: give it its own environment,
`pip install -e . torch==2.13.0`), the same standard U-Net's step in
PyTorch is a reference column.

    python bench/train_throughput.py [--steps 10] [--sizes 128 256] [--precisions float32 bfloat16] [--data DIR]
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
    """Seconds per step, after a warm-up step."""
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def jax_step(config, batch):
    """(a function running one train step alone on a batch (x, y), the step's FLOPs)."""
    import jax
    from flax import nnx

    from nucjax.train.loop import build_training_model, make_optimizer, make_update

    model = build_training_model(config)
    optimizer = make_optimizer(model, config.train)
    step = nnx.jit(make_update(config))
    cost = step.lower(model, optimizer, *batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (lambda x, y: jax.block_until_ready(step(model, optimizer, x, y))), float(cost.get("flops", 0.0))


def end_to_end(config, examples, pipeline: str):
    """A function timing `steps` train steps that draw their own batches, as
    nucjax.train runs them (compiled and warmed up here); returns images/s."""
    import jax

    from nucjax.train.loop import Batches, build_training_model, make_optimizer, make_train_step

    config = config.replace(train={"pipeline": pipeline})
    model = build_training_model(config)
    optimizer = make_optimizer(model, config.train)
    step = make_train_step(config)
    batches = Batches(examples, config)
    for data, indices, key in batches.epoch(0, 2):  # compile, warm up
        jax.block_until_ready(step(model, optimizer, data, indices, key))
    epochs = iter(range(1, 10**6))

    def run(steps: int) -> float:
        started = time.perf_counter()
        for data, indices, key in batches.epoch(next(epochs), steps):
            loss = step(model, optimizer, data, indices, key)
        jax.block_until_ready(loss)
        return steps * config.train.batch_size / (time.perf_counter() - started)

    return run


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


def measure(args) -> None:
    """The child: one convolution path (XLA_FLAGS is set by the parent), every model, size and precision, JSON lines."""
    import jax

    from nucjax.batches import batch_key, epoch_order, make_batch, pack
    from nucjax.cli import load_data
    from nucjax.config import from_params
    from nucjax.inputs import training_examples
    from nucjax.models.memory import training_bytes

    device = jax.devices()[0]
    samples = load_data(args.data, labelled=True).samples
    for model in args.models:
        for size in args.sizes:
            config = from_params({"model": model, "size": size, "batch_size": args.batch, "base_filters": args.base_filters})
            examples = training_examples(samples, model, config.inputs, config.augment)
            data = jax.device_put(pack(examples))
            draw = jax.jit(make_batch, static_argnums=(3, 4))
            order = epoch_order(0, 1, args.steps + 2, args.batch, len(examples))
            batch = jax.block_until_ready(draw(batch_key(0, 1, 0), data, order[0], config.inputs, config.augment))
            pipeline = args.batch / time_steps_each(
                lambda i: jax.block_until_ready(draw(batch_key(0, 1, i), data, order[i], config.inputs, config.augment)), args.steps)
            for precision in args.precisions:
                config = config.replace(train={"precision": precision})
                step, flops = jax_step(config, batch)
                resident = end_to_end(config, examples, "resident")
                streamed = end_to_end(config, examples, "streaming")
                # Rounds alternate the three, so drift on a shared machine hits each alike; medians are reported.
                rounds = [(args.batch / time_steps(lambda: step(*batch), args.steps), resident(args.steps), streamed(args.steps))
                          for _ in range(args.rounds)]
                step_rate, resident_rate, streamed_rate = (float(np.median(r)) for r in zip(*rounds))
                row = {"platform": device.platform, "model": model, "size": size, "precision": precision,
                       "pipeline": pipeline, "step": step_rate, "end_to_end": resident_rate, "streamed": streamed_rate,
                       "ratios": [round(r[1] / r[0], 3) for r in rounds],
                       "gflops": flops * step_rate / args.batch / 1e9,
                       "estimate_gb": training_bytes(config.model, size, size, args.batch) / 1e9}
                stats = device.memory_stats() or {}
                if stats.get("peak_bytes_in_use"):
                    row["peak_gb"] = stats["peak_bytes_in_use"] / 1e9  # the process's peak so far
                print(json.dumps(row), flush=True)


def time_steps_each(step, steps: int) -> float:
    """Seconds per call of step(i) for i in 1..steps (0 was the warm-up)."""
    started = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return (time.perf_counter() - started) / steps


def cpu_peak_gflops() -> tuple[float, float, int]:
    """(FP32 peak GFLOP/s, clock GHz, cores) from /proc/cpuinfo and the cores this process may use."""
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
    ghz = (sum(mhz) / len(mhz) / 1000) if mhz else float("nan")
    cores = len(os.sched_getaffinity(0))
    return cores * FLOP_PER_CYCLE * ghz, ghz, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of step, end to end and streamed; medians (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--models", nargs="+", default=["standard", "extended"])
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--platform", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: both convolution paths; gpu: the GPU, with its memory peak")
    parser.add_argument("--data", type=Path, help="training images for the pipeline (default: the synthetic set)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(args)

    if args.platform == "cpu":
        peak, ghz, cores = cpu_peak_gflops()
        print(f"{cores} cores at {ghz:.2f} GHz: FP32 peak {peak:.0f} GFLOP/s; batch {args.batch}, {args.steps} steps")
        paths = {name: {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"} for name, flags in PATHS.items()}
    else:
        peak, paths = float("nan"), {"gpu": {"JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}
        print(f"batch {args.batch}, {args.steps} steps")
    print(f"medians of {args.rounds} alternating rounds of {args.steps} steps; e2e/step per round in the last column")
    print(f"{'path':<26}{'model':<10}{'size':>5} {'precision':<10}{'pipeline':>9}{'step':>8}{'end to end':>11}{'e2e/step':>9}"
          f"{'streamed':>9}{'GFLOP/s':>9}{'of peak':>8}{'memory est/peak GB':>20}  rounds  (img/s)")
    for path, env in paths.items():
        command = [sys.executable, __file__, "--child", *sys.argv[1:]]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        for line in done.stdout.splitlines():
            r = json.loads(line)
            memory = f"{r['estimate_gb']:.2f}/{r['peak_gb']:.2f}" if "peak_gb" in r else f"{r['estimate_gb']:.2f}/-"
            print(f"{path:<26}{r['model']:<10}{r['size']:>5} {r['precision']:<10}{r['pipeline']:>9.1f}{r['step']:>8.1f}"
                  f"{r['end_to_end']:>11.1f}{r['end_to_end'] / r['step']:>9.2f}{r['streamed']:>9.1f}{r['gflops']:>9.1f}"
                  f"{r['gflops'] / peak:>8.0%}{memory:>20}  {' '.join(f'{x:.2f}' for x in r['ratios'])}", flush=True)
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
