"""Choosing an ensemble's candidates: every checkpoint the top-k trials of
a search experiment kept, the checkpoints of one trial, or explicit
folders. Only the experiment record is read here (nucjax.experiment);
loading the models is the caller's."""

from __future__ import annotations

from pathlib import Path

from nucjax.experiment import RESULTS_FILE, Experiment, ExperimentError


def trial_checkpoints(experiment: Experiment, trial: str) -> list[Path]:
    """Every complete checkpoint a trial kept, oldest first ('best': the best trial's)."""
    if trial == "best":
        if not experiment.results:
            raise ExperimentError(f"{experiment.folder}: no ranked results to find the best trial in")
        trial = experiment.results[0]["trial"]
    folder = experiment.trial_folder(trial)
    if not folder.is_dir():
        known = ", ".join(r["trial"] for r in experiment.results[:5])
        raise ExperimentError(f"{experiment.folder}: no trial '{trial}'" + (f" (best trials: {known})" if known else ""))
    found = experiment.kept_checkpoints(trial)
    if not found:
        raise ExperimentError(f"{folder}: the trial kept no checkpoint")
    return found


def top_checkpoints(experiment: Experiment, k: int) -> list[Path]:
    """Every checkpoint kept by the k best trials (that kept any), best trial first.

    A trial keeps its few best epochs: together they are the candidates an
    ensemble chooses from. Checkpoints are looked up in this folder, so an
    experiment copied from a cluster's storage works where it lands.
    """
    if k < 1:
        raise ExperimentError(f"--top-k must be at least 1, got {k}")
    if not experiment.results:
        raise ExperimentError(f"{experiment.folder}: no ranked results ({RESULTS_FILE} missing or empty: "
                              "did the search finish? resume it with python -m search.run --resume)")
    found, trials = [], 0
    for row in experiment.results:
        kept = experiment.kept_checkpoints(row["trial"])
        found += kept
        trials += bool(kept)  # a failed trial kept none and does not count
        if trials == k:
            break
    if not found:
        raise ExperimentError(f"{experiment.folder}: no trial's checkpoint is on disk")
    return found


def candidate_checkpoints(experiment: Experiment | None, top_k: int, epochs_of: str | None = None,
                          checkpoints=None) -> list[Path]:
    """The candidates: explicit checkpoints, else one trial's epochs, else the top-k trials'."""
    if checkpoints:
        return [Path(c) for c in checkpoints]
    if epochs_of:
        return trial_checkpoints(experiment, epochs_of)
    return top_checkpoints(experiment, top_k)
