"""Benchmark: the same time budget spent four ways, one after the other on
this machine: the search with ASHA (--scheduler asha), the search with
successive halving (--scheduler halving), both with --folds 0; the
default search (halving, then its winner refit on 5 group folds: 'folds');
and a default nucjax.train. For each: the best checkpoint's validation
(group split) by kind and group and its score on the searches' held-back
test images (both through nucjax.predict, what a user gets), the
configurations tried, and the share of trial core-seconds spent on the
configuration that won. For 'folds' also: the out-of-fold score, and
every fold model and the fold ensemble on the held-back test images
(ensemble.predict --compare).

    python bench/search_budget.py --minutes 60 [--data ../shared/data/dsb2018/stage1_train] [--out DIR] [--runs asha,halving,folds,train] [--seed S]

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


RUNS = ("asha", "halving", "folds", "train")


def search_row(storage: Path) -> tuple[str, int, float, str, str]:
    """A search's best checkpoint (found under storage, wherever the search
    ran), its configurations, the share of trial core-seconds its winner
    took, the winner's model (what the spaces vary) and, for a halving
    search, the first rung's rank correlation with the last cut."""
    from search.halving import first_rung_correlation, read_halving

    with open(storage / "results.csv") as handle:
        results = list(csv.DictReader(handle))
    spent = [float(r.get("core_seconds") or 0) for r in results]
    best = results[0]
    checkpoint = storage / Path(best["checkpoint"]).parent.name / Path(best["checkpoint"]).name
    model = f"{best.get('model')} d{best.get('depth')} w{best.get('base_filters')} {best.get('size')} px, diameter {best.get('diameter')}"
    record = read_halving(storage)
    correlation, scored = first_rung_correlation(record) if record else (None, 0)
    rank = f"{correlation:+.2f} ({scored})" if correlation is not None else "-"
    return str(checkpoint), len(results), float(best.get("core_seconds") or 0) / max(sum(spent), 1e-9), model, rank


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
        elif name == "folds":
            run(["search.run", "--space", "extended", "--data", str(args.data), "--time-budget", minutes,
                 "--seed", str(args.seed), "--storage", str(folder)])
        else:
            run(["search.run", "--space", "extended", "--data", str(args.data), "--time-budget", minutes,
                 "--scheduler", name, "--folds", "0", "--seed", str(args.seed), "--storage", str(folder)])
    rows = []
    for name in RUNS:
        folder = out / name
        if (folder / "results.csv").exists():
            rows.append((f"search, {name}", *search_row(folder)))
        elif (folder / "checkpoints").exists():
            rows.append(("nucjax.train", str(folder), 1, 1.0, "the defaults", "-"))

    print(f"{minutes}-minute budget each, seed {args.seed}, {args.data}")
    print("| run | configurations | core-seconds on the winner | winner | first rung vs last cut (Spearman, configs) "
          "| validation | held-back test | validation by kind | by group |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, checkpoint, configurations, share, model, rank in rows:
        val, test = predicted(checkpoint, args.data, "val"), predicted(checkpoint, args.data, "test")
        print(f"| {name} | {configurations} | {100 * share:.0f}% | {model} | {rank} | {val.get('Kaggle score')} "
              f"| {test.get('Kaggle score')} | {val.get('by kind')} | {val.get('by group')} |")
    if (out / "folds" / "folds.csv").exists():
        print_folds(out / "folds")


def print_folds(storage: Path) -> None:
    """The refit: its out-of-fold score, and ensemble.predict --compare's table
    (each fold model and each combination) on the held-back test images."""
    import json

    record = json.loads((storage / "experiment.json").read_text())["search"]["folds"]
    oof = record["oof"]
    print(f"\nrefit: {record['folds']} folds, {record['seconds'] / 60:.1f} minutes (each fold trained "
          f"{record['seconds_per_fold'] / 60:.1f}); out-of-fold {oof['score']:.4f} over {oof['images']} images, by kind "
          + ", ".join(f"{k} {v:.4f}" for k, v in oof["by_kind"].items())
          + "; by fold " + ", ".join(f"{f['fold']}: {f['score']:.4f} ({f['images']})" for f in oof["folds"])
          + f"; pooled with the ensemble's one calibration {record['ensemble']['score']:.4f}")
    compared = run(["ensemble.predict", "--experiment", str(storage), "--compare", "--out", str(storage / "test_submission.csv")])
    print("held-back test images, ensemble.predict --compare:")
    print("\n".join(line for line in compared.splitlines() if line.startswith(("  ", "by kind", "Kaggle score"))))
    print_combinations(storage / "test_submission_compare_images.csv")


def print_combinations(per_image: Path) -> None:
    """Each combination of the fold models against the mean, paired over the held-back test images."""
    from ensemble.report import gain_text
    from nucjax.metrics import paired_gain

    with open(per_image) as handle:
        rows = list(csv.DictReader(handle))
    combinations = [name for name in rows[0] if name.split(" ")[0] in ("mean", "intersect", "vote") and " of " in name]
    mean = next(name for name in combinations if name.startswith("mean"))
    for name in combinations:
        if name != mean:
            gain = paired_gain([float(r[name]) for r in rows], [float(r[mean]) for r in rows])
            print(f"{name} against {mean}: {gain_text(gain)}, 90% interval, over {len(rows)} images")


if __name__ == "__main__":
    main()
