"""The record of a search experiment: what search.run writes and what
ensemble.predict and Segmenter.load read, in one place.

An experiment is a search's --storage folder:

    experiment.json   data, split, validation and held-back test ids, how the search ran
    results.csv       one row per trial, best first
    trial_<id>/       each trial's kept checkpoint_NNNNNN/ folders, Tune's logs and TensorBoard events
    folds/            a group k-fold refit's trials (search.refit), folds.csv one row per fold
    ensemble.json     the ensemble ensemble.predict chose (when it ran)
    ensemble_compare.csv, .png   ensemble.predict --compare's table and plot
    report.html       the page search.report writes

Only files are read and written here; nothing imports Ray.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from nucjax.data.synthetic import SyntheticConfig

EXPERIMENT_FILE = "experiment.json"
RESULTS_FILE = "results.csv"
ENSEMBLE_FILE = "ensemble.json"
#: Where a refit's fold trials live in the experiment, and its entry in the search record.
FOLDS_FOLDER = "folds"
#: ensemble.predict --compare's table and plot, kept in the experiment for its report.
COMPARE_CSV, COMPARE_PNG = "ensemble_compare.csv", "ensemble_compare.png"
#: results.csv's first columns; the trial's parameters follow.
RESULT_COLUMNS = ("rank", "trial", "score", "epoch", "epochs_run", "calibrated", "checkpoint", "node", "error",
                  "validated", "core_seconds", "images_per_s", "unit_steps", "fate")


class ExperimentError(Exception):
    """No usable experiment, trial or checkpoint; the message names it."""


def is_experiment(folder) -> bool:
    return (Path(folder) / EXPERIMENT_FILE).is_file()


@dataclass(frozen=True)
class Experiment:
    folder: Path
    data: Path
    space: str = ""
    synthetic: SyntheticConfig | None = None  # the generated set searched on, to make it again
    split: str = "stratified"
    val_fraction: float = 0.15
    test_fraction: float = 0.0
    seed: int = 0
    val_ids: tuple[str, ...] | None = None  # None in experiments made before they were recorded
    test_ids: tuple[str, ...] = ()
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    results: tuple[dict, ...] = ()  # results.csv rows, best first
    # How the search ran: train_images, time_budget_min, grace_period,
    # max_epochs, cpus_per_trial, gpus_per_trial (empty in older experiments).
    search: dict = field(default_factory=dict)

    def write(self) -> Path:
        """Write experiment.json (results are written by write_results)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "space": self.space, "data": str(self.data), "synthetic": self.synthetic is not None,
            "synthetic_config": asdict(self.synthetic) if self.synthetic is not None else None,
            "created": self.created,
            "split": {"method": self.split, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": self.seed},
            "val_ids": list(self.val_ids) if self.val_ids is not None else None,
            "test_ids": list(self.test_ids),
            "search": self.search,
        }
        path = self.folder / EXPERIMENT_FILE
        path.write_text(json.dumps(record, indent=2))
        return path

    def write_results(self, rows: list[dict], parameters: list[str]) -> Path:
        """results.csv: RESULT_COLUMNS, then the parameters any row has."""
        columns = list(RESULT_COLUMNS) + [k for k in parameters if any(k in r for r in rows)]
        path = self.folder / RESULTS_FILE
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return path

    def trial_folder(self, trial: str) -> Path:
        return self.folder / trial

    def kept_checkpoints(self, trial: str) -> list[Path]:
        """The complete checkpoints a trial kept here, oldest first: those
        validated on the whole validation split when it has any (a halving
        search's pruning rungs score a subset, a number prediction does not give)."""
        found = sorted(p.parent for p in self.trial_folder(trial).glob("checkpoint_*/checkpoint.json"))
        whole = [c for c in found if self.val_ids is not None and _validated_images(c) == len(self.val_ids)]
        return whole or found

    def best_checkpoint(self) -> Path:
        """The best trial's best kept checkpoint (looked up in this folder,
        so an experiment copied from a cluster works where it lands)."""
        for row in self.results:
            kept = self.kept_checkpoints(row["trial"])
            if kept:
                recorded = Path(row.get("checkpoint") or "").name
                return next((k for k in kept if k.name == recorded), kept[-1])
        raise ExperimentError(f"{self.folder}: no trial's checkpoint is on disk")

    def with_search(self, **entries) -> "Experiment":
        """A copy whose search record has these entries too (write() stores it)."""
        return replace(self, search={**self.search, **entries})

    @property
    def folds(self) -> dict | None:
        """The refit's record (search.refit): folds, members, out-of-fold
        score ('oof'), the fold ensemble's calibration; None without one."""
        return self.search.get(FOLDS_FOLDER) or None

    def fold_checkpoints(self) -> list[Path]:
        """The fold models' chosen checkpoints, fold order; [] without a refit."""
        record = self.folds
        if not record:
            return []
        found = [self.folder / member for member in record.get("members", ())]
        missing = [str(f) for f in found if not f.is_dir()]
        if missing:
            raise ExperimentError(f"{self.folder}: fold checkpoints missing: {', '.join(missing)}")
        return found

    def write_ensemble(self, members: list[Path], combine: str, quorum: int | None, postprocess: dict,
                       scales: tuple[float, ...] = (1.0,)) -> Path:
        """ensemble.json: the members, how their maps combine, the post-processing
        calibrated for them and the multi-scale factors it was calibrated at."""
        path = self.folder / ENSEMBLE_FILE
        path.write_text(json.dumps({"members": [str(m) for m in members], "combine": combine, "quorum": quorum,
                                    "postprocess": postprocess, "scales": list(scales)}, indent=2))
        return path

    def read_ensemble(self) -> dict | None:
        """The ensemble ensemble.predict chose, members found in this folder; None when none was chosen."""
        path = self.folder / ENSEMBLE_FILE
        if not path.is_file():
            return None
        try:
            plan = json.loads(path.read_text())
            plan["members"] = [self._here(Path(m)) for m in plan["members"]]
            return plan
        except (ValueError, KeyError, TypeError) as err:
            raise ExperimentError(f"{path}: unreadable ({err})") from None

    def _here(self, checkpoint: Path) -> Path:
        """A checkpoint path recorded elsewhere, found under this folder."""
        for moved in (self.folder / checkpoint.parent.name / checkpoint.name,
                      self.folder / FOLDS_FOLDER / checkpoint.parent.name / checkpoint.name):
            if moved.is_dir():
                return moved
        return checkpoint


def _validated_images(checkpoint: Path) -> int | None:
    """How many validation images scored a checkpoint (its checkpoint.json's metrics)."""
    try:
        return json.loads((checkpoint / "checkpoint.json").read_text())["metrics"].get("images")
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def latest_experiment(runs: Path) -> Path:
    """The most recently created experiment folder under runs/."""
    found = sorted(runs.glob(f"*/{EXPERIMENT_FILE}"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise ExperimentError(f"no search experiment under {runs.absolute()}: run python -m search.run first, "
                              "or name one with --experiment or checkpoints with --checkpoints")
    return found[-1].parent


def read_experiment(folder) -> Experiment:
    """The experiment in folder, results ranked best first; reads the
    experiment.json of every nucjax version so far."""
    folder = Path(folder).absolute()
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise ExperimentError(f"{folder}: not a search experiment (no {EXPERIMENT_FILE})")
    try:
        record = json.loads(path.read_text())
        split = record.get("split", {})
        synthetic = None
        if record.get("synthetic_config"):
            synthetic = SyntheticConfig(**{k: _tuples(v) for k, v in record["synthetic_config"].items()})
        elif record.get("synthetic"):
            from nucjax.data.synthetic import SEARCH_SMOKE

            synthetic = SEARCH_SMOKE  # what every search on the synthetic set used before this was recorded
        experiment = Experiment(
            folder=folder, data=Path(record["data"]), space=record.get("space", ""), synthetic=synthetic,
            split=split.get("method", "stratified"), val_fraction=float(split.get("val_fraction", 0.15)),
            test_fraction=float(split.get("test_fraction", 0.0)), seed=int(split.get("seed", 0)),
            val_ids=tuple(record["val_ids"]) if record.get("val_ids") is not None else None,
            test_ids=tuple(record.get("test_ids", ())), created=record.get("created", ""),
            search=dict(record.get("search") or {}),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise ExperimentError(f"{path}: unreadable ({err})") from None
    return replace(experiment, results=_ranked_results(folder / RESULTS_FILE))


def _tuples(value):
    """JSON's lists as the tuples the frozen configs hold, at any depth."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _ranked_results(path: Path) -> tuple[dict, ...]:
    if not path.is_file():
        return ()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [(_score(row), row) for row in rows]
    return tuple(row for score, row in sorted((s for s in scored if not math.isnan(s[0])), key=lambda s: -s[0]))


def _score(row: dict) -> float:
    try:
        return float(row.get("score") or "nan")
    except ValueError:
        return float("nan")
