"""Choosing the members of an ensemble: the top-k trials of a search
experiment, several epochs of one trial, or explicit checkpoint folders.

An experiment is a search's --storage folder: experiment.json (data, split,
held-back test ids), results.csv (trials ranked by validation score) and
one folder per trial with its checkpoint_NNNNNN/ folders. Only files are
read here; loading the models is the caller's.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

EXPERIMENT_FILE = "experiment.json"
RESULTS_FILE = "results.csv"


class MemberError(Exception):
    """No usable experiment, trial or checkpoint; the message names it."""


@dataclass(frozen=True)
class Experiment:
    folder: Path
    data: Path
    synthetic: bool
    val_fraction: float
    test_fraction: float
    seed: int
    test_ids: tuple[str, ...]
    val_ids: tuple[str, ...] | None  # None in experiments made before they were recorded
    results: tuple[dict, ...]  # results.csv rows, best first

    def trial_folder(self, trial: str) -> Path:
        return self.folder / trial

    def kept_checkpoints(self, trial: str) -> list[Path]:
        """The complete checkpoints a trial kept here, oldest first."""
        return sorted(p.parent for p in self.trial_folder(trial).glob("checkpoint_*/checkpoint.json"))


def latest_experiment(runs: Path) -> Path:
    """The most recently created experiment folder under runs/."""
    found = sorted(runs.glob(f"*/{EXPERIMENT_FILE}"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise MemberError(f"no search experiment under {runs.absolute()}: run python -m search.run first, "
                          "or name one with --experiment or checkpoints with --checkpoints")
    return found[-1].parent


def read_experiment(folder: Path) -> Experiment:
    folder = Path(folder).absolute()
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise MemberError(f"{folder}: not a search experiment (no {EXPERIMENT_FILE})")
    results = ()
    if (folder / RESULTS_FILE).is_file():
        with open(folder / RESULTS_FILE, newline="") as handle:
            scored = [(_score(row), row) for row in csv.DictReader(handle)]
        results = tuple(row for _, row in sorted((s for s in scored if s[0] == s[0]), key=lambda s: -s[0]))
    try:
        record = json.loads(path.read_text())
        split = record.get("split", {})
        return Experiment(
            folder=folder, data=Path(record["data"]), synthetic=bool(record.get("synthetic", False)),
            val_fraction=float(split.get("val_fraction", 0.15)), test_fraction=float(split.get("test_fraction", 0.0)),
            seed=int(split.get("seed", 0)), test_ids=tuple(record.get("test_ids", ())),
            val_ids=tuple(record["val_ids"]) if "val_ids" in record else None, results=results,
        )
    except (ValueError, KeyError, TypeError) as err:
        raise MemberError(f"{path}: unreadable ({err})") from None


def _score(row: dict) -> float:
    try:
        return float(row.get("score", "nan"))
    except ValueError:
        return float("nan")


def trial_checkpoints(experiment: Experiment, trial: str) -> list[Path]:
    """Every complete checkpoint a trial kept, oldest first."""
    folder = experiment.trial_folder(trial)
    if not folder.is_dir():
        known = ", ".join(r["trial"] for r in experiment.results[:5])
        raise MemberError(f"{experiment.folder}: no trial '{trial}'" + (f" (best trials: {known})" if known else ""))
    found = experiment.kept_checkpoints(trial)
    if not found:
        raise MemberError(f"{folder}: the trial kept no checkpoint")
    return found


def top_checkpoints(experiment: Experiment, k: int) -> list[Path]:
    """Every checkpoint kept by the k best trials (that kept any), best trial first.

    A trial keeps its few best epochs: together they are the candidates an
    ensemble chooses from. Checkpoints are looked up in this folder, so an
    experiment copied from a cluster's storage works where it lands.
    """
    if k < 1:
        raise MemberError(f"--top-k must be at least 1, got {k}")
    if not experiment.results:
        raise MemberError(f"{experiment.folder}: no ranked results ({RESULTS_FILE} missing or empty: "
                          "did the search finish? resume it with python -m search.run --resume)")
    found, trials = [], 0
    for row in experiment.results:
        kept = experiment.kept_checkpoints(row["trial"])
        found += kept
        trials += bool(kept)  # a failed trial kept none and does not count
        if trials == k:
            break
    if not found:
        raise MemberError(f"{experiment.folder}: no trial's checkpoint is on disk")
    return found
