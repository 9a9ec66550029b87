"""Benchmark: milliseconds per 512 x 512 image of every post-processing
method, on one core, on real DSB2018 images.

The probability maps come from a trained checkpoint (--checkpoint, a
checkpoint or run folder) or, without one, from the truth, blurred as a
model's maps are (body and border). Real images of at least 512 px are cut
to 512 x 512. The Kaggle score of each method on the same maps is printed
beside its time.

    python bench/postprocess_speed.py [--checkpoint RUN] [--images 20]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from nucjax.data import load_dataset  # noqa: E402
from nucjax.metrics import image_score  # noqa: E402
from nucjax.postprocess import PostprocessConfig, instances  # noqa: E402
from nucjax.targets import border_target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train"
SIZE = 512


def simulated_maps(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    body = cv2.GaussianBlur((labels > 0).astype(np.float32), (0, 0), 1.5)
    border = np.clip(cv2.GaussianBlur(np.asarray(border_target(labels)), (0, 0), 1.0) * 1.5, 0, 1)
    noise = rng.normal(0, 0.05, labels.shape + (2,)).astype(np.float32)
    return np.clip(np.stack([body, border], axis=-1) + noise, 0, 1)


def model_maps(checkpoint: Path, samples) -> list[np.ndarray]:
    from nucjax.inference import Predictor, predict_image
    from nucjax.inputs import model_inputs
    from nucjax.checkpoints import load_model

    model, info = load_model(checkpoint)
    forward = Predictor(model).bind(model)
    config = info.config
    return [predict_image(forward, model_inputs(s.image, config.model.model), config.inputs, config.model.multiple) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    ids = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    dataset = load_dataset(args.data, ids=ids[: 8 * args.images])
    big = [s for s in dataset.samples if min(s.image.shape[:2]) >= SIZE][: args.images]
    samples = [type(s)(s.image_id, s.image[:SIZE, :SIZE], s.labels[:SIZE, :SIZE]) for s in big]
    rng = np.random.default_rng(0)
    maps = model_maps(args.checkpoint, samples) if args.checkpoint else [simulated_maps(s.labels, rng) for s in samples]
    source = f"checkpoint {args.checkpoint}" if args.checkpoint else "truth, blurred"
    print(f"{len(samples)} real images cut to {SIZE}x{SIZE}; maps from {source}; one core")
    print(f"{'method':<11}{'ms/image':>10}{'Kaggle':>9}")
    for method in ("auto", "cc", "reference", "distance", "border"):
        config = PostprocessConfig(method=method)
        if maps[0].shape[-1] < 2 and method == "border":
            continue
        outputs = [instances(m, config, s.image) for m, s in zip(maps, samples)]
        start = time.perf_counter()
        for _ in range(args.repeats):
            for m, s in zip(maps, samples):
                instances(m, config, s.image)
        ms = (time.perf_counter() - start) / args.repeats / len(samples) * 1000
        score = np.mean([image_score(s.labels, o).score for s, o in zip(samples, outputs)])
        print(f"{method:<11}{ms:>10.1f}{score:>9.3f}")


if __name__ == "__main__":
    main()
