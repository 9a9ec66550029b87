"""Benchmark: seconds per image per member of python -m ensemble.predict on
real DSB2018 images, TTA off, from the command's start to its submission.

The first --images images of the experiment's held-back test split (or of
the data folder) are linked into a temporary folder and predicted by the
--members best checkpoints of the experiment, twice: cold (an empty JAX
compilation cache, so every image size compiles) and warm (the cache the
cold run filled). Calibration is off, so only prediction is timed.

    python bench/ensemble_speed.py --experiment EXP [--images 65] [--members 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", type=Path, required=True)
    parser.add_argument("--images", type=int, default=65)
    parser.add_argument("--members", type=int, default=3, help="the best checkpoints of the experiment's best trials")
    args = parser.parse_args()

    from nucjax.experiment import read_experiment

    experiment = read_experiment(args.experiment)  # results ranked best first
    data = experiment.data
    ids = list(experiment.test_ids) or sorted(p.name for p in data.iterdir())
    ids = [i for i in ids if (data / i).is_dir()][: args.images]
    checkpoints = [row["checkpoint"] for row in experiment.results if row.get("checkpoint")][: args.members]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for image_id in ids:
            (folder / image_id).symlink_to(data / image_id)
        cache = Path(tmp) / "jax-cache"
        command = [sys.executable, "-m", "ensemble.predict", "--checkpoints", *checkpoints, "--data", str(folder),
                   "--no-calibrate", "--select", "all", "--out", str(Path(tmp) / "submission.csv")]
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
        print(f"{len(ids)} images, {len(checkpoints)} members, {os.cpu_count()} CPUs")
        for run in ("cold", "warm"):
            started = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:
                sys.exit(done.stderr)
            per = seconds / len(ids) / len(checkpoints)
            print(f"{run}: {seconds:.1f} s in all, {per:.2f} s per image per member")


if __name__ == "__main__":
    main()
