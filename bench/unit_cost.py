"""Benchmark: what a training step of each configuration of the CPU search
space costs on this machine, against the work the halving's equal-time
units assume (search.trainable.step_cost: a forward pass's
multiply-adds times the batch, less for wider models). For each configuration: images/s as
nucjax.train draws and trains batches (the resident pipeline), the step's
seconds relative to nucjax.train's defaults, and the same ratio of the
multiply-adds and of step_cost.

    python bench/unit_cost.py [--data DIR] [--steps 12] [--images 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (model, depth, base_filters, size): nucjax.train's defaults first, then each axis of the CPU space moved alone, then corners.
CONFIGS = [("standard", 4, 16, 128), ("standard", 4, 16, 192), ("standard", 4, 16, 256), ("standard", 4, 24, 128),
           ("standard", 4, 32, 128), ("standard", 5, 16, 128), ("extended", 4, 16, 128), ("extended", 5, 32, 256),
           ("standard", 5, 24, 192)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--images", type=int, default=40, help="training images loaded (the first N)")
    args = parser.parse_args()
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import end_to_end

    from nucjax.cli import load_data
    from nucjax.config import default_params, from_params
    from nucjax.inputs import training_examples
    from nucjax.models.memory import multiply_adds
    from search.trainable import step_cost

    samples = load_data(args.data, labelled=True).samples[: args.images]
    rows, reference = [], None
    print("| model | depth | width | crop | images/s | time ratio | multiply-adds ratio | step_cost ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for model, depth, width, size in CONFIGS:
        config = from_params({**default_params(), "model": model, "depth": depth, "base_filters": width, "size": size})
        examples = training_examples(samples, model, config.inputs, config.augment)
        run = end_to_end(config, examples, "resident")
        images_per_s = max(run(args.steps) for _ in range(2))
        step_s = config.train.batch_size / images_per_s
        madds, cost = multiply_adds(config.model, size, size) * config.train.batch_size, step_cost(config)
        reference = reference or (step_s, madds, cost)
        rows.append((model, depth, width, size, images_per_s, step_s / reference[0], madds / reference[1], cost / reference[2]))
        print(f"| {model} | {depth} | {width} | {size} | {images_per_s:.1f} | {step_s / reference[0]:.2f} | "
              f"{madds / reference[1]:.2f} | {cost / reference[2]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
