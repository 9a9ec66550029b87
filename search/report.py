"""python -m search.report [EXP]: a search experiment at a glance, as one
self-contained HTML page (EXP/report.html, pictures embedded), readable
offline. Sections:

- summary: data, split sizes, budget, resources, the best trial and its
  validation score, the commands that turn it into a submission;
- trials: every trial's varied parameters, status (finished; stopped by
  ASHA at epoch N; stopped by the time budget; running; not started when
  the search ended first; errored, with the error's last line), epochs,
  best validation score and per-kind scores, sortable by any column
  (click its heading);
- learning curves: validation score and training loss against epoch, and
  score against wall time, every trial on one plot, ASHA's rungs marked;
- failures: the best checkpoint's worst validation images, truth and
  prediction outlined in two colours, each with its score, and its scores
  per kind;
- the best trial's per-epoch film;
- the ensemble comparison, when `ensemble.predict --compare` has run on it.

search.run writes it at the end of every search and refreshes it as trials
report (without the failure gallery, which predicts). EXP defaults to the
latest experiment under ./runs. Open it in any browser; TensorBoard reads
the same trials: tensorboard --logdir EXP.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from nucjax.experiment import COMPARE_CSV, COMPARE_PNG
from nucjax.postprocess import PostprocessConfig, settings_text
from nucjax.segmenter import scales_text
from search.halving import fates, first_rung_correlation, read_halving, rung_counts

REPORT_FILE = "report.html"
#: Worst validation images shown.
GALLERY_IMAGES = 6
#: The trials' own keys that are not settings (results.csv's bookkeeping).
NOT_SETTINGS = {"split", "val_fraction", "test_fraction"}


@dataclass
class Trial:
    """One trial as its folder holds it: Tune's params.json and result.json,
    its error file, its kept checkpoints."""

    name: str
    params: dict
    history: list[dict]  # one report per epoch, oldest first
    error: str = ""  # the error's last line
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """The epoch reached: the last report's (a halving survivor reports only the epochs it validates)."""
        return int(_number(self.history[-1].get("epoch")) or len(self.history)) if self.history else 0

    @property
    def planned_epochs(self) -> int:
        """Its epochs in all: the last report's (a survivor plans its own), else its parameters'."""
        reported = _number(self.history[-1].get("epochs")) if self.history else None
        return int(reported or _number(self.params.get("epochs")) or 0)

    @property
    def best(self) -> dict:
        scored = [h for h in self.history if _number(h.get("score")) is not None]
        return max(scored, key=lambda h: h["score"]) if scored else {}


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def read_trial(folder: Path) -> Trial:
    """A trial folder; missing or torn files give what they can."""
    params = {}
    if (folder / "params.json").is_file():
        try:
            params = json.loads((folder / "params.json").read_text())
        except ValueError:
            params = {}
    history = []
    if (folder / "result.json").is_file():
        for line in (folder / "result.json").read_text().splitlines():
            try:
                history.append(json.loads(line))
            except ValueError:
                continue  # a line being written
    error = ""
    if (folder / "error.txt").is_file():
        lines = [line for line in (folder / "error.txt").read_text(errors="replace").splitlines() if line.strip()]
        error = lines[-1].strip() if lines else "error (no message)"
    checkpoints = sorted(p.parent for p in folder.glob("checkpoint_*/checkpoint.json"))
    return Trial(folder.name, params, history, error, checkpoints)


@dataclass(frozen=True)
class LiveSearch:
    """What the running search knows that its folder does not yet: Tune
    writes each trial's results to the driver's staging folder and copies
    them into the experiment only from time to time; and which trials
    have ended (stopped by ASHA, finished, errored)."""

    staging: Path | None = None
    ended: frozenset[str] = frozenset()


def read_trials(experiment_folder: Path, staging: Path | None = None) -> list[Trial]:
    """The experiment's trials: results from staging where it holds as many
    (LiveSearch), checkpoints from the experiment folder, where Tune puts them."""
    folders = [experiment_folder] + ([staging] if staging else [])
    names = sorted({p.name for folder in folders for p in folder.glob("trial_*") if p.is_dir()})
    trials = []
    for name in names:
        trial = read_trial(experiment_folder / name)
        if staging and (staging / name).is_dir():
            live = read_trial(staging / name)
            if len(live.history) >= len(trial.history):
                trial = replace(live, checkpoints=trial.checkpoints)
        trials.append(trial)
    return trials


def asha_rungs(grace_period: int | None, max_epochs: int | None) -> list[int]:
    """The epochs at which ASHA (reduction factor 2) may stop a trial."""
    if not grace_period or not max_epochs:
        return []
    rungs, epoch = [], grace_period
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= 2
    return rungs


def trial_status(trial: Trial, rungs: list[int], running: bool, fate: str | None = None) -> str:
    """finished, stopped by ASHA at epoch N, stopped by the time budget,
    running, waiting, not started, no report (started, ended before its
    first epoch), or the error; in a halving search (fate: see
    search.halving.fates) pruned at rung r, or paused at rung r."""
    if trial.error:
        return f"errored at epoch {trial.epochs}: {trial.error}"
    if fate and fate.startswith("pruned"):
        return f"{fate} (epoch {trial.epochs})"
    if fate and fate.startswith("at rung") and trial.history:
        return f"running ({fate[3:]}, epoch {trial.epochs})" if running else f"stopped by the time budget {fate} (epoch {trial.epochs})"
    planned = trial.planned_epochs
    if not trial.history:
        # Tune writes params.json when a trial starts: without it, the search ended first.
        return "waiting" if running else ("no report" if trial.params else "not started")
    if planned and trial.epochs >= planned:
        return "finished"
    if running:
        return f"running (epoch {trial.epochs})"
    if trial.epochs in rungs:
        return f"stopped by ASHA at epoch {trial.epochs}"
    return f"stopped by the time budget at epoch {trial.epochs}"


def core_seconds(trial: Trial, cpus_per_trial: float) -> float | None:
    """The CPU-core seconds a trial took (its Tune time, pauses excluded, times its CPUs)."""
    times = [_number(h.get("time_total_s")) for h in trial.history]
    times = [t for t in times if t is not None]
    return round(max(times) * cpus_per_trial, 1) if times else None


def calibrated_thresholds(result: dict) -> str:
    """A report's calibrated post-processing, short: body/seed thresholds, then a kind's own where it has them."""
    try:
        config = PostprocessConfig(**json.loads(result.get("calibrated") or "{}"))
    except (TypeError, ValueError):
        return ""
    shared = f"{config.threshold:.2f}/{config.seed_threshold:.2f}"
    return "; ".join([shared] + [f"{kind} {settings_text(fields)}" for kind, fields in config.by_kind])


def varied_settings(trials: list[Trial]) -> list[str]:
    """The settings whose values differ between trials (all of them for a single trial)."""
    keys = sorted({k for t in trials for k in t.params} - NOT_SETTINGS)
    if len(trials) < 2:
        return keys
    return [k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True) for t in trials}) > 1]


def kinds_of(trials: list[Trial]) -> list[str]:
    found = {k[len("score_"):] for t in trials for h in t.history for k in h
             if k.startswith("score_") and not k.startswith("score_group_")}
    return sorted(found)


# Pictures ------------------------------------------------------------------

def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _png_of(array) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _file_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def learning_curves(trials: list[Trial], rungs: list[int], scheduler: str = "ASHA") -> str | None:
    """Score and loss against epoch, score against minutes, every trial; the scheduler's rungs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [t for t in trials if t.history]
    if not shown:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for trial in shown:
        epochs = [h.get("epoch", h.get("training_iteration")) for h in trial.history]
        minutes = [(_number(h.get("time_total_s")) or 0) / 60 for h in trial.history]
        scores = [_number(h.get("score")) for h in trial.history]
        losses = [_number(h.get("loss")) for h in trial.history]
        line, = axes[0].plot(epochs, scores, marker="o", ms=3, label=trial.name)
        axes[1].plot(epochs, losses, marker="o", ms=3, color=line.get_color())
        axes[2].plot(minutes, scores, marker="o", ms=3, color=line.get_color())
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        for rung in rungs:
            ax.axvline(rung, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("epoch" + (f" (dashed: {scheduler} rungs)" if rungs else ""))
    axes[0].set_ylabel("validation Kaggle score")
    axes[1].set_ylabel("training loss")
    axes[2].set_xlabel("minutes since the trial started")
    axes[2].set_ylabel("validation Kaggle score")
    if len(shown) <= 12:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


@dataclass
class Failure:
    image_id: str
    kind: str
    score: float
    picture: str  # a data URI
    scale: float = 1.0  # the working scale --scale auto chose for it


def failure_gallery(checkpoint: Path, samples, count: int = GALLERY_IMAGES) -> tuple[list[Failure], dict]:
    """The checkpoint's worst `count` of the labelled samples (truth and
    prediction outlined), and its mean score per kind over all of them."""
    import numpy as np

    from nucjax.data import image_kind
    from nucjax.metrics import image_score
    from nucjax.pictures import PREDICTION_COLOUR, TRUTH_COLOUR, contour_overlay
    from nucjax.segmenter import Segmenter

    samples = list(samples)
    segmenter = Segmenter.load(checkpoint).planned(s.image for s in samples)  # scales as the validation planned them
    scored, scales = [], []
    for sample in samples:
        scale, labels = segmenter.segment_at_scale(sample.image)
        scored.append((image_score(sample.labels, labels).score, sample, labels))
        scales.append(scale)
    kinds = [image_kind(s.image) for _, s, _ in scored]
    by_kind = {k: float(np.mean([sc for (sc, _, _), kk in zip(scored, kinds) if kk == k])) for k in sorted(set(kinds))}
    worst = sorted(range(len(scored)), key=lambda i: scored[i][0])[:count]
    failures = []
    for i in worst:
        score, sample, labels = scored[i]
        image = np.ascontiguousarray(sample.image[..., :3])
        picture = contour_overlay(contour_overlay(image, sample.labels, TRUTH_COLOUR), labels, PREDICTION_COLOUR)
        failures.append(Failure(sample.image_id, kinds[i], float(score), _png_of(picture), float(scales[i])))
    return failures, by_kind


def best_film(trial: Trial) -> str | None:
    """The trial's per-epoch film (frames kept in its newest checkpoint), as a GIF data URI."""
    import tempfile

    from nucjax.train.film import write_film

    for checkpoint in reversed(trial.checkpoints):
        if list((checkpoint / "film").glob("epoch_*.png")):
            with tempfile.TemporaryDirectory() as scratch:
                gif = Path(scratch) / "film.gif"
                write_film(checkpoint / "film", gif)
                return _file_uri(gif, "image/gif")
    return None


# The page ----------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 9px; border-bottom: 1px solid #eee; text-align: left; }
table.sortable th { cursor: pointer; background: #f4f4f4; white-space: nowrap; } table.sortable th:hover { background: #e4e4ff; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.best { background: #eef8ee; }
.trials tr:not(.status-errored) td:nth-child(2) { white-space: nowrap; }  /* an error's line may wrap */
.status-errored { color: #b00; } .status-stopped { color: #8a5a00; } .status-running { color: #06c; }
code { background: #f4f4f4; padding: 1px 4px; } .note { color: #666; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; } .gallery figure { margin: 0; max-width: 440px; }
.gallery img { max-width: 440px; max-height: 360px; border: 1px solid #ccc; } img.plot { max-width: 100%; }
"""

#: Click a heading to sort by it (numbers as numbers), again to reverse.
SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var descending = th.dataset.order !== 'desc';
      table.querySelectorAll('th').forEach(function (other) { delete other.dataset.order; });
      th.dataset.order = descending ? 'desc' : 'asc';
      var numeric = th.dataset.type === 'number';
      var key = function (row) {
        var cell = row.cells[column], text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent;
        if (!numeric) return text;
        var number = parseFloat(text);
        return isNaN(number) ? -Infinity : number;
      };
      var body = table.tBodies[0];
      Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _cell(value, numeric: bool = False) -> str:
    if numeric:
        number = _number(value)
        shown = "" if number is None else f"{number:.4g}"
        return f'<td class="num" data-value="{"" if number is None else number}">{shown}</td>'
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(headings: list[tuple[str, bool]], rows: list[list], css: str = "sortable", row_classes=None) -> str:
    head = "".join(f'<th data-type="{"number" if numeric else "text"}">{html.escape(name)}</th>' for name, numeric in headings)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(v, numeric) for v, (_, numeric) in zip(row, headings)) + "</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _numeric_setting(trials: list[Trial], key: str) -> bool:
    values = [t.params.get(key) for t in trials if t.params.get(key) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _status_class(status: str) -> str:
    return "status-" + status.split()[0]


@dataclass
class Report:
    """What the page shows, gathered from the experiment folder."""

    folder: Path
    experiment: object  # nucjax.experiment.Experiment
    trials: list[Trial]
    running: bool
    ended: frozenset[str] = frozenset()  # while running: the trials that have ended
    problems: list[str] = field(default_factory=list)
    failures: list[Failure] | None = None
    failure_kinds: dict | None = None
    film: str | None = None


def gather(folder: Path, gallery: bool = True, running: bool = False, cache: Path | None = None,
           live: LiveSearch | None = None) -> Report:
    """Read an experiment into a Report; what cannot be shown is said in report.problems.
    Raises nucjax.experiment.ExperimentError when folder is not an experiment."""
    from nucjax.experiment import read_experiment

    live = live or LiveSearch()
    experiment = read_experiment(folder)
    trials = read_trials(experiment.folder, live.staging)
    report = Report(experiment.folder, experiment, trials, running, live.ended)
    scored = sorted((t for t in trials if t.best), key=lambda t: -t.best["score"])
    if not trials:
        report.problems.append("no trial has started yet" if running else "this experiment has no trial folders")
    elif not scored:
        report.problems.append("no trial has reported a validation score yet" if running else "no trial finished an epoch")
    if scored:
        best = scored[0]
        if not best.checkpoints:
            report.problems.append(f"{best.name}: its checkpoints are not on disk (deleted, or kept on a cluster's storage): "
                                   "no failure gallery or film")
        else:
            report.film = best_film(best)
            if gallery:
                report.failures, report.failure_kinds = _gallery(experiment, best, report.problems, cache)
    return report


def _gallery(experiment, best: Trial, problems: list[str], cache: Path | None):
    from nucjax.data import DataError
    from nucjax.experiment import ExperimentError
    from nucjax.checkpoints import CheckpointError

    try:
        from ensemble.images import calibration_samples
        from nucjax.cli import cache_root

        samples, _ = calibration_samples([], experiment, None, cache or cache_root())
        if not samples:
            problems.append("no labelled validation images to show failures on")
            return None, None
        checkpoint = _best_checkpoint(best)
        return failure_gallery(checkpoint, samples)
    except (ExperimentError, CheckpointError, DataError, OSError) as err:
        problems.append(f"failure gallery: {err}")
        return None, None


def _best_checkpoint(trial: Trial) -> Path:
    """The kept checkpoint of the trial's best epoch, else its newest."""
    best_epoch = trial.best.get("epoch")
    for checkpoint in trial.checkpoints:
        try:
            if json.loads((checkpoint / "checkpoint.json").read_text()).get("epoch") == best_epoch:
                return checkpoint
        except ValueError:
            continue
    return trial.checkpoints[-1]


def render(report: Report) -> str:
    """The page's HTML."""
    experiment, trials = report.experiment, report.trials
    search = getattr(experiment, "search", {}) or {}
    folds = search.get("folds")
    halving = read_halving(report.folder)
    rungs = ([units for _, units in halving["plan"]["rungs"][:-1]] if halving
             else asha_rungs(search.get("grace_period"), search.get("max_epochs")))
    fate_of = fates(halving) if halving else {}
    cpus = float(search.get("cpus_per_trial") or 1)
    scored = sorted((t for t in trials if t.best), key=lambda t: -t.best["score"])
    best = scored[0] if scored else None
    name = report.folder.name
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nucjax search {html.escape(name)}</title>"
             f"<style>{STYLE}</style></head><body>"]
    state = "running: this page refreshes as trials report" if report.running else "finished"
    parts.append(f"<h1>Search <code>{html.escape(name)}</code></h1><p class='note'>{state}; "
                 f"written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>")
    for problem in report.problems:
        parts.append(f"<p class='status-errored problem'>{html.escape(problem)}</p>")

    # Summary
    data = "the synthetic set" if experiment.synthetic is not None else os.path.normpath(experiment.data)
    val = len(experiment.val_ids) if experiment.val_ids is not None else "?"
    summary = [
        ("data", data), ("search space", experiment.space or "?"),
        ("split", f"{experiment.split}: {search.get('train_images', '?')} training, {val} validation, "
                  f"{len(experiment.test_ids)} held-back test images"),
        ("budget", f"{search['time_budget_min']:g} minutes" if search.get("time_budget_min") else "no time limit"),
        *([("refit", f"{folds['folds']} group folds, {100 * folds['share']:.0f}% of the budget, "
                     f"{folds['seconds'] / 60:.1f} minutes spent")] if folds and folds.get("share") else []),
        ("resources per trial", f"{search.get('cpus_per_trial', '?')} CPUs, {search.get('gpus_per_trial', 0)} GPUs"),
        ("trials", f"{len(trials)} ({sum(1 for t in trials if t.error)} errored)"),
    ]
    spent = {t.name: core_seconds(t, cpus) or 0.0 for t in trials}
    if halving:
        summary.append(("scheduler", f"successive halving: {len(fate_of)} configurations, "
                                     + ", then ".join(f"{left} of {entered} past {steps} steps"
                                                      for entered, left, steps in rung_counts(halving)[:-1])))
        survivors = sum(spent.get(f"trial_{t}", 0.0) for t, f in fate_of.items() if f == "survivor")
        if sum(spent.values()):
            summary.append(("core-seconds", f"{sum(spent.values()):.0f}, {100 * survivors / sum(spent.values()):.0f}% "
                                            "on the final survivors"))
        correlation, configurations = first_rung_correlation(halving)
        if correlation is not None:
            summary.append(("first rung against the last cut", f"Spearman {correlation:+.2f} over the {configurations} "
                                                               "configurations scored at both (1: the first rung foresaw the cut)"))
        recorded = search.get("halving", {})
        setup, probe = recorded.get("setup_seconds"), recorded.get("probe", {})
        if setup is not None and search.get("time_budget_min"):
            probes = (f"; the probes {probe['seconds']:.0f} s, {probe['compile']:.0f} s of it compiling"
                      if "seconds" in probe and "compile" in probe else "")
            summary.append(("before the first trial", f"{setup:.0f} s (Ray's start, the data, the timing probes), "
                                                      f"{100 * setup / (60 * search['time_budget_min']):.1f}% of the budget{probes}"))
    elif search.get("grace_period"):
        summary.append(("scheduler", f"ASHA (grace period {search['grace_period']} epochs)"))
    if best is not None:
        summary.append(("best trial", f"{best.name}: validation Kaggle score {best.best['score']:.4f} "
                                      f"at epoch {best.best.get('epoch', '?')}"))
    parts.append("<h2 id='summary'>Summary</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary) + "</table>")
    if best is not None:
        parts.append(f"<p>Submission from the ensemble of this search: <code>python -m ensemble.predict --experiment "
                     f"{html.escape(str(report.folder))} --data DIR --out submission.csv</code><br>From the best checkpoint alone: "
                     f"<code>python -m nucjax.predict --checkpoint {html.escape(str(report.folder / best.name))} --data DIR</code>"
                     f"<br>Curves in TensorBoard: <code>tensorboard --logdir {html.escape(str(report.folder))}</code></p>")

    if folds:
        parts.append("<h2 id='folds'>Group k-fold refit</h2>" + _folds_section(report.folder, folds))

    # Trials
    settings = varied_settings(trials)
    kinds = kinds_of(trials)
    headings = [("trial", False), ("status", False), ("epochs run", True), ("best score", True), ("best epoch", True),
                ("core-seconds", True), ("images/s", True), ("steps per unit", True), ("thresholds", False)]
    headings += [(f"score {k}", True) for k in kinds] + [(k, _numeric_setting(trials, k)) for k in settings]
    rows, classes = [], []
    for trial in sorted(trials, key=lambda t: -(t.best.get("score", -1))):
        status = trial_status(trial, rungs, report.running and trial.name not in report.ended,
                              fate_of.get(trial.name.removeprefix("trial_")))
        row = [trial.name, status, trial.epochs, trial.best.get("score"), trial.best.get("epoch"), core_seconds(trial, cpus),
               trial.best.get("images_per_s"), trial.best.get("unit_steps"), calibrated_thresholds(trial.best)]
        row += [trial.best.get(f"score_{k}") for k in kinds] + [trial.params.get(k) for k in settings]
        rows.append(row)
        classes.append(("best " if trial is best else "") + _status_class(status))
    parts.append("<h2 id='trials'>Trials</h2><p class='note'>Click a heading to sort.</p>"
                 + (f"<div class='trials'>{_table(headings, rows, row_classes=classes)}</div>" if trials
                    else "<p>No trials yet.</p>"))

    # Curves
    curves = learning_curves(trials, rungs, "halving" if halving else "ASHA")
    parts.append("<h2 id='curves'>Learning curves</h2>"
                 + (f"<img class='plot' alt='learning curves' src='{curves}'>" if curves else "<p>No epoch reported yet.</p>"))

    # Failures
    parts.append("<h2 id='failures'>Where the best model fails</h2>")
    if report.failures:
        parts.append(f"<p class='note'>The worst validation images of {html.escape(best.name)}'s best checkpoint: "
                     "truth outlined in cyan, prediction in yellow.</p>")
        if report.failure_kinds:
            parts.append(_table([("image kind", False), ("mean score", True)], [[k, v] for k, v in report.failure_kinds.items()], css=""))
        parts.append("<div class='gallery'>" + "".join(
            f"<figure><img alt='{html.escape(f.image_id)}' src='{f.picture}'><figcaption>{f.score:.3f} &middot; "
            f"{html.escape(f.kind)} &middot; {'native scale' if f.scale == 1.0 else f'scale {f.scale:.2f}'} &middot; "
            f"<code>{html.escape(f.image_id[:16])}</code></figcaption></figure>"
            for f in report.failures) + "</div>")
    else:
        parts.append("<p>Not computed " + ("while the search runs" if report.running else "(see above)")
                     + f": <code>python -m search.report {html.escape(str(report.folder))}</code> predicts them.</p>")

    # Film
    parts.append("<h2 id='film'>The best trial's film</h2>" + (
        f"<p class='note'>Per epoch: image, truth, probabilities, prediction.</p><img alt='film' src='{report.film}'>"
        if report.film else "<p>No film recorded for the best trial.</p>"))

    # Ensemble
    parts.append("<h2 id='ensemble'>Ensemble comparison</h2>" + _ensemble_section(report.folder))
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _folds_section(folder: Path, record: dict) -> str:
    """The refit's out-of-fold score (the experiment's headline), by kind, by fold and by group."""
    if "oof" not in record:
        return "<p class='status-errored'>No fold trained: see folds.csv.</p>"
    oof = record["oof"]
    out = (f"<p>{html.escape(record.get('source', ''))} trained once per fold; every image outside the held-back "
           f"test set validated once, by the fold model that never saw its experiment. <b>Out-of-fold Kaggle score "
           f"{oof['score']:.4f}</b> over {oof['images']} images"
           + (f"; the fold ensemble's one calibration on the pooled maps scores {record['ensemble']['score']:.4f}"
              if "ensemble" in record else "") + ".</p>")
    out += _table([("image kind", False), ("out-of-fold score", True)], [[k, v] for k, v in oof["by_kind"].items()], css="")
    out += _table([("fold", True), ("images", True), ("score", True)],
                  [[f["fold"], f["images"], f["score"]] for f in oof["folds"]], css="")
    tried = (record.get("ensemble") or {}).get("tried")
    if tried:  # multi-scale test-time augmentation, kept only beyond the noise
        out += _table([("ensemble at scales", False), ("pooled out-of-fold", True), ("gain over one scale", False), ("kept", False)],
                      [[scales_text(entry["scales"]), entry["score"],
                        f"{entry['gain']:+.4f} ({entry['low']:+.4f} to {entry['high']:+.4f})" if "gain" in entry else "",
                        "yes" if entry["kept"] else ""] for entry in tried], css="")
    out += _table([("acquisition group", False), ("out-of-fold score", True)], [[k, v] for k, v in oof["by_group"].items()], css="")
    return out


def _ensemble_section(folder: Path) -> str:
    import csv

    table = folder / COMPARE_CSV
    if not table.is_file():
        return (f"<p>Not run yet: <code>python -m ensemble.predict --experiment {html.escape(str(folder))} --compare</code> "
                "compares every member and combination here.</p>")
    with open(table, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return "<p>The comparison file is empty.</p>"
    header, body = rows[0], rows[1:]
    numeric = [all(_number(r[i]) is not None for r in body if i < len(r)) for i in range(len(header))]
    out = _table(list(zip(header, numeric)), body)
    plot = folder / COMPARE_PNG
    if plot.is_file():
        out += f"<img class='plot' alt='ensemble comparison' src='{_file_uri(plot, 'image/png')}'>"
    return out


def write_report(folder: Path, gallery: bool = True, running: bool = False, cache: Path | None = None,
                 live: LiveSearch | None = None) -> Path:
    """Write folder/report.html (through a temporary file, so a browser never reads half a page)."""
    page = render(gather(Path(folder), gallery, running, cache, live))
    path = Path(folder) / REPORT_FILE
    partial = path.with_suffix(".html.partial")
    partial.write_text(page)
    partial.replace(path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m search.report", description=__doc__.split("\n\n")[0],
                                     epilog="A folder that is not an experiment exits with status 2.")
    parser.add_argument("experiment", nargs="?", type=Path, help="experiment folder (default: the latest under ./runs)")
    parser.add_argument("--no-gallery", action="store_true", help="skip the failure gallery (it predicts the validation images)")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the whole page, as headless Chromium shows it")
    args = parser.parse_args(argv)
    from nucjax.cli import fail, use_jax_environment
    from nucjax.experiment import ExperimentError, latest_experiment

    use_jax_environment()
    try:
        folder = args.experiment or latest_experiment(Path("runs"))
        path = write_report(folder, gallery=not args.no_gallery)
    except ExperimentError as err:
        fail(str(err))
    print(f"report: {path.absolute()}")
    print(f"open it in a browser: file://{path.absolute()}", file=sys.stderr)
    if args.screenshot:
        from search.browser import BrowserError, Page

        try:
            with Page() as page:
                seconds = page.open(path.absolute().as_uri())
                page.screenshot(args.screenshot)
        except (BrowserError, ImportError) as err:
            fail(f"no screenshot: {err}")
        print(f"screenshot: {args.screenshot} (the page loaded in {seconds:.2f} s)")


if __name__ == "__main__":
    main()
