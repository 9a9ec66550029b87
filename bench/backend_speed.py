"""Benchmark: JAX against ONNX Runtime for one checkpoint, on the same
real images, in one run: seconds per image from the process's start to
its submission (python -m nucjax.predict --backend B, each image at the
planned nucleus scale, JAX's compilation cache warm), and the network
alone (one forward of each image's padded native-scale input, after a
warm-up pass). Then how far the two backends' maps lie apart, how many
pixels sit within 1e-4 of the body threshold (where a submission could
differ), and whether the submissions are identical.

    python bench/backend_speed.py --checkpoint RUN_OR_CHECKPOINT [--data DIR] [--split val] [--images 40]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train")
    parser.add_argument("--split", choices=("all", "train", "val"), default="val")
    parser.add_argument("--images", type=int, default=40, help="at most this many images of the split")
    args = parser.parse_args()

    from nucjax.cli import use_jax_environment

    use_jax_environment()
    from nucjax.data import find_samples
    from nucjax.inference import MARGIN, padded_side
    from nucjax.inputs import reflect_pad
    from nucjax.predict import split_part
    from nucjax.segmenter import Segmenter, readable_samples

    jax_segmenter = Segmenter.load(args.checkpoint)
    onnx_segmenter = Segmenter.load(args.checkpoint, backend="onnx")
    (model,) = jax_segmenter.models
    sources = find_samples(args.data)[0]
    if args.split != "all":
        sources, _ = split_part(sources, args.split, model.config.train)
    sources = sources[: args.images]
    samples = list(readable_samples(sources))
    print(f"{len(samples)} images, {model.path}, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for source in sources:
            (folder / source.image_id).symlink_to(args.data / source.image_id)
        rows = {}
        for backend in ("jax", "jax", "onnx"):  # the first JAX run fills the compilation cache
            out = Path(tmp) / f"{backend}.csv"
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "nucjax.predict", "--checkpoint", str(args.checkpoint), "--data",
                                   str(folder), "--backend", backend, "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr)
            rows[backend] = (time.perf_counter() - started, out, done.stdout.strip().splitlines()[-1].split()[-1])
        identical = filecmp.cmp(rows["jax"][1], rows["onnx"][1], shallow=False)

    multiple = model.config.model.multiple
    inputs = []
    for sample in samples:
        x = model.inputs(sample.image).astype(np.float32) / 255.0
        h, w = x.shape[:2]
        inputs.append(reflect_pad(x, padded_side(h, multiple), padded_side(w, multiple), MARGIN, MARGIN)[None])
    network = {}
    for name, segmenter in (("jax", jax_segmenter), ("onnx", onnx_segmenter)):
        forward = segmenter.models[0].forward
        for x in inputs:  # warm-up: compiles every shape (JAX), plans every shape (ONNX Runtime)
            forward(x)
        started = time.perf_counter()
        for x in inputs:
            forward(x)
        network[name] = (time.perf_counter() - started) / len(inputs)

    largest, near, pixels = 0.0, 0, 0
    threshold = model.threshold
    for sample in samples:
        (jax_maps,) = jax_segmenter.member_maps(sample.image)[1]
        (onnx_maps,) = onnx_segmenter.member_maps(sample.image)[1]
        largest = max(largest, float(np.abs(jax_maps - onnx_maps).max()))
        near += int((np.abs(jax_maps[..., 0] - threshold) < TOLERANCE).sum())
        pixels += jax_maps[..., 0].size

    print("| backend | process start to submission (s per image) | network alone (s per image) | score |")
    print("|---|---|---|---|")
    for backend in ("jax", "onnx"):
        seconds, _, score = rows[backend]
        print(f"| {backend} | {seconds / len(samples):.3f} | {network[backend]:.3f} | {score} |")
    print(f"largest map difference {largest:.2e}; {near} of {pixels} body pixels ({near / pixels:.1e}) within "
          f"{TOLERANCE:g} of the threshold {threshold:.3f}; submissions identical: {identical}")


if __name__ == "__main__":
    main()
