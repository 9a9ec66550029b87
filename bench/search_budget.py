"""Benchmark: the same time budget spent three ways, one after the other on
this machine: the search with ASHA (--scheduler asha), the search with
successive halving (--scheduler halving), and a default nucjax.train.
For each: the best checkpoint's validation (group split) by kind and
group and its score on the searches' held-back test images (both through
nucjax.predict, what a user gets), the configurations tried, and the
share of trial core-seconds spent on the configuration that won.

    python bench/search_budget.py --minutes 60 [--data ../shared/data/dsb2018/stage1_train] [--out DIR] [--runs asha,halving,train] [--seed S]

The training run holds back the searches' test share too (same seed and
split), so all three are scored on the same unseen images.

--seed draws another sample: the split, the searches' configurations
(their sampler's order) and the training run's seed all change with it,
so one bench is one comparison, and several seeds say how much of a
difference is the draw.

The three runs take 3 x M minutes, so the bench can be run in parts: a
run whose folder under --out already holds its result (a search's
results.csv, a training run's checkpoints) is not run again, and the
table covers every run found there.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def predicted(checkpoint: str, data: Path, split: str) -> dict:
    """The Kaggle score lines nucjax.predict prints for a checkpoint on a part of its split."""
    lines = run(["nucjax.predict", "--checkpoint", checkpoint, "--data", str(data), "--split", split,
                 "--out", "/dev/null"]).splitlines()
    found = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines
             if line.startswith(("by kind:", "by group:", "Kaggle score:"))}
    return found


RUNS = ("asha", "halving", "train")


def search_row(storage: Path) -> tuple[str, int, float]:
    """A search's best checkpoint (found under storage, wherever the search
    ran), its configurations and the share of trial core-seconds its winner took."""
    with open(storage / "results.csv") as handle:
        results = list(csv.DictReader(handle))
    spent = [float(r.get("core_seconds") or 0) for r in results]
    best = results[0]
    checkpoint = storage / Path(best["checkpoint"]).parent.name / Path(best["checkpoint"]).name
    return str(checkpoint), len(results), float(best.get("core_seconds") or 0) / max(sum(spent), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train")
    parser.add_argument("--out", type=Path, help="bench folder, reused if it exists (default: bench/search_budget/<time>)")
    parser.add_argument("--runs", default=",".join(RUNS), help="which of asha, halving, train to run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the split's, sampler's and training's seed (default: %(default)s)")
    args = parser.parse_args()
    out = (args.out or ROOT / "bench" / "search_budget" / time.strftime("%Y%m%d-%H%M%S")).absolute()
    minutes = f"{args.minutes:g}"
    for name in args.runs.split(","):
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
        folder = out / name
        if (folder / "results.csv").exists() or (folder / "checkpoints").exists():
            continue
        if name == "train":
            run(["nucjax.train", "--data", str(args.data), "--time-budget", minutes, "--test-fraction", "0.1",
                 "--seed", str(args.seed), "--out", str(folder)])
        else:
            run(["search.run", "--space", "extended", "--data", str(args.data), "--time-budget", minutes,
                 "--scheduler", name, "--seed", str(args.seed), "--storage", str(folder)])
    rows = []
    for name in RUNS:
        folder = out / name
        if (folder / "results.csv").exists():
            rows.append((f"search, {name}", *search_row(folder)))
        elif (folder / "checkpoints").exists():
            rows.append(("nucjax.train", str(folder), 1, 1.0))

    print(f"{minutes}-minute budget each, seed {args.seed}, {args.data}")
    print("| run | configurations | core-seconds on the winner | validation | held-back test | validation by kind | by group |")
    print("|---|---|---|---|---|---|---|")
    for name, checkpoint, configurations, share in rows:
        val, test = predicted(checkpoint, args.data, "val"), predicted(checkpoint, args.data, "test")
        print(f"| {name} | {configurations} | {100 * share:.0f}% | {val.get('Kaggle score')} | {test.get('Kaggle score')} "
              f"| {val.get('by kind')} | {val.get('by group')} |")


if __name__ == "__main__":
    main()
