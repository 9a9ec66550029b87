"""search.report on hand-made experiment folders (the statuses, an errored
trial, a running search, bad input) and in a real headless Chromium. The
report of a real search is checked in test_search.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nucjax.experiment import Experiment
from search.browser import find_chromium
from search.report import LiveSearch, asha_rungs, gather, main, render, write_report

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium (.ci/run installs it)")


def make_trial(folder: Path, name: str, scores: list[float], epochs: int, error: str | None = None,
               at: list[int] | None = None, planned: int | None = None, **params):
    """A trial folder as Tune writes it; at: the epochs reported (every one by default),
    planned: the epochs in all the trial itself reports (a halving survivor's own plan)."""
    trial = folder / name
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"epochs": epochs, "learning_rate": 1e-3, **params}))
    at = at or list(range(1, len(scores) + 1))
    lines = [json.dumps({"score": s, "loss": 1.0 / (i + 1), "epoch": at[i], "training_iteration": i + 1,
                         "time_total_s": 30.0 * (i + 1), "score_fluorescence": s + 0.1, "score_histology": s - 0.1,
                         **({"epochs": planned} if planned else {})})
             for i, s in enumerate(scores)]
    (trial / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if error:
        (trial / "error.txt").write_text(f"Traceback (most recent call last):\n  File 'x.py'\n{error}\n")
    return trial


@pytest.fixture
def experiment(tmp_path):
    folder = tmp_path / "exp"
    Experiment(folder, tmp_path / "data", "standard", None, "group", 0.15, 0.1, 0, ("a", "b"), ("c",),
               search={"train_images": 40, "time_budget_min": 10.0, "grace_period": 2, "max_epochs": 4,
                       "cpus_per_trial": 1, "gpus_per_trial": 0}).write()
    make_trial(folder, "trial_a", [0.3, 0.4, 0.45, 0.5], 4, learning_rate=2e-3)
    make_trial(folder, "trial_b", [0.2, 0.25], 4)
    make_trial(folder, "trial_c", [0.1], 4, error="ValueError: the loss became nan")
    make_trial(folder, "trial_d", [0.3, 0.35, 0.38], 4)
    return folder


def test_every_trial_has_a_row_and_its_status(experiment):
    assert asha_rungs(2, 4) == [2] and asha_rungs(3, 12) == [3, 6] and asha_rungs(None, 8) == []
    report = gather(experiment, gallery=True)
    page = render(report)
    assert page.count("<tr class=") == 4
    assert "finished" in page and "stopped by ASHA at epoch 2" in page
    assert "stopped by the time budget at epoch 3" in page
    assert "errored at epoch 1: ValueError: the loss became nan" in page
    assert "trial_a: validation Kaggle score 0.5000 at epoch 4" in page
    assert "learning_rate" in page  # a setting that differs between trials is a column
    assert "score fluorescence" in page and "score histology" in page
    # No checkpoint on disk: the page says so instead of a gallery, and keeps the rest.
    assert "its checkpoints are not on disk" in page and "data:image/png;base64," in page


def test_a_running_search_shows_the_trials_so_far(experiment):
    page = render(gather(experiment, gallery=False, running=True))
    assert "running (epoch 2)" in page and "running (epoch 3)" in page and "refreshes as trials report" in page
    assert "errored at epoch 1" in page


def test_a_halving_search_shows_its_rungs_where_its_core_seconds_went_and_its_set_up(tmp_path):
    from search.halving import HALVING_FILE

    folder = tmp_path / "exp"
    plan = {"rungs": [[4, 1], [2, 3]], "unit_steps": 10, "unit_seconds": 30.0, "start_seconds": 5.0, "slots": 2, "eta": 2}
    Experiment(folder, tmp_path / "data", "extended", None, "group", 0.15, 0.1, 0, ("a", "b"), ("c",),
               search={"train_images": 40, "time_budget_min": 10.0, "cpus_per_trial": 1, "gpus_per_trial": 0,
                       "scheduler": "halving", "halving": {"plan": plan, "setup_seconds": 30.0, "probe": {"seconds": 20.0, "compile": 8.0}}}).write()
    for name, units in (("a", 3), ("b", 1), ("c", 1), ("d", 3)):  # 30 s of Tune time per unit
        make_trial(folder, f"trial_{name}", [0.1 * units] * units, units)
    record = {"plan": plan, "rung": {"a": 1, "b": 0, "c": 0, "d": 1}, "scores": {},
              "fate": {"b": "pruned at rung 0", "c": "pruned at rung 0"}}
    (folder / HALVING_FILE).write_text(json.dumps(record) + "\n")
    page = render(gather(folder, gallery=False))
    assert "successive halving: 4 configurations, 2 of 4 past 10 steps" in page
    assert "240, 75% on the final survivors" in page  # 90 + 90 of 30 + 30 + 90 + 90
    assert "30 s (Ray&#x27;s start, the data, the timing probes), 5.0% of the budget; the probes 20 s, 8 s of it compiling" in page
    assert "pruned at rung 0" in page


def test_a_survivor_that_planned_its_own_epochs_ends_finished_at_its_last_epoch(tmp_path):
    """Survivors validate every few units and plan their units anew: the
    report reads the epoch each reached and the end each planned."""
    from search.halving import HALVING_FILE

    folder = tmp_path / "exp"
    plan = {"rungs": [[4, 1], [2, 3]], "unit_steps": 10, "unit_seconds": 30.0, "start_seconds": 5.0, "slots": 2, "eta": 2}
    Experiment(folder, tmp_path / "data", "extended", None, "group", 0.15, 0.1, 0, ("a", "b"), ("c",),
               search={"train_images": 40, "time_budget_min": 10.0, "cpus_per_trial": 1, "gpus_per_trial": 0,
                       "scheduler": "halving", "halving": {"plan": plan}}).write()
    make_trial(folder, "trial_a", [0.2, 0.3, 0.4, 0.5], 3, at=[1, 2, 4, 6], planned=6)  # planned 3, then 6
    make_trial(folder, "trial_b", [0.2, 0.3, 0.35], 3, at=[1, 2, 4], planned=6)  # cut at 4 of its 6
    (folder / HALVING_FILE).write_text(json.dumps({"plan": plan, "rung": {"a": 1, "b": 1}, "scores": {}, "fate": {}}) + "\n")
    report = gather(folder, gallery=False)
    assert {t.name: (t.epochs, t.planned_epochs) for t in report.trials} == {"trial_a": (6, 6), "trial_b": (4, 6)}
    page = render(report)
    assert "finished" in page and "stopped by the time budget at epoch 4" in page


def test_a_running_search_reads_tunes_staging_folder_and_knows_which_trials_ended(experiment, tmp_path):
    # Tune has written trial_b's third epoch and a new trial_e to its staging folder, not yet to the experiment.
    staging = tmp_path / "staging"
    make_trial(staging, "trial_b", [0.2, 0.25, 0.3], 4)
    make_trial(staging, "trial_e", [0.6], 4)
    (experiment / "trial_a" / "checkpoint_000003").mkdir()
    (experiment / "trial_a" / "checkpoint_000003" / "checkpoint.json").write_text("{}")
    make_trial(staging, "trial_a", [0.3, 0.4], 4)  # older than the experiment's copy: not used
    report = gather(experiment, gallery=False, running=True, live=LiveSearch(staging, frozenset({"trial_d"})))
    trials = {t.name: t for t in report.trials}
    assert trials["trial_b"].epochs == 3 and trials["trial_e"].epochs == 1 and trials["trial_a"].epochs == 4
    assert [c.name for c in trials["trial_a"].checkpoints] == ["checkpoint_000003"]
    page = render(report)
    assert page.count("<tr class=") == 5 and "running (epoch 3)" in page
    assert "stopped by the time budget at epoch 3" in page  # trial_d ended: not running


def test_an_experiment_without_a_report_or_trial_says_so(tmp_path):
    folder = tmp_path / "empty"
    Experiment(folder, tmp_path, "standard").write()
    assert "this experiment has no trial folders" in render(gather(folder))
    make_trial(folder, "trial_x", [], 4)
    page = render(gather(folder))
    assert "no trial finished an epoch" in page and "no report" in page
    (folder / "trial_y").mkdir()  # a trial the search never started: Tune made its folder only
    assert "not started" in render(gather(folder))


def test_a_folder_that_is_not_an_experiment_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path)])
    assert stopped.value.code == 2
    assert "not a search experiment" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


@needs_chromium
def test_chromium_renders_the_table_and_sorts_it(experiment, tmp_path):
    from search.browser import Page

    path = write_report(experiment, gallery=False)
    with Page() as page:
        page.open(path.as_uri())
        assert page.evaluate("document.querySelectorAll('table.sortable tbody tr').length") == 4
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        first_column = "Array.from(document.querySelectorAll('table.sortable tbody tr')).map(r => r.cells[0].textContent)"
        assert page.evaluate(first_column)[0] == "trial_a"  # best first
        # Click 'best score': highest first; again: lowest first.
        page.evaluate("Array.from(document.querySelectorAll('table.sortable th')).find(t => t.textContent == 'best score').click()")
        assert page.evaluate(first_column) == ["trial_a", "trial_d", "trial_b", "trial_c"]
        page.evaluate("Array.from(document.querySelectorAll('table.sortable th')).find(t => t.textContent == 'best score').click()")
        assert page.evaluate(first_column) == ["trial_c", "trial_b", "trial_d", "trial_a"]
        page.evaluate("Array.from(document.querySelectorAll('table.sortable th')).find(t => t.textContent == 'trial').click()")
        assert page.evaluate(first_column) == ["trial_d", "trial_c", "trial_b", "trial_a"]
        shot = page.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 10_000



def test_a_refit_shows_its_out_of_fold_score_by_kind_fold_and_group_and_its_share_of_the_budget(experiment):
    from nucjax.experiment import read_experiment

    oof = {"score": 0.5297, "images": 590, "by_kind": {"fluorescence": 0.6085, "histology": 0.2573},
           "by_group": {"fluorescence-256x256-1": 0.53, "histology-256x320-1": 0.24},
           "folds": [{"fold": 0, "images": 300, "score": 0.51}, {"fold": 1, "images": 290, "score": 0.55}]}
    record = {"folds": 2, "source": "the search's winner trial_a", "share": 0.5, "seconds": 1800.0, "members": [],
              "oof": oof, "ensemble": {"score": 0.5246}}
    read_experiment(experiment).with_search(folds=record).write()
    page = render(gather(experiment, gallery=False))
    assert "<h2 id='folds'>Group k-fold refit</h2>" in page
    assert "Out-of-fold Kaggle score 0.5297</b> over 590 images" in page and "scores 0.5246" in page
    assert "histology-256x320-1" in page and "2 group folds, 50% of the budget, 30.0 minutes spent" in page
    # The trials' table is still the page's first sortable one (the refit's tables are plain).
    assert page.index('class="sortable"') > page.index("id='trials'")


def test_a_halving_search_shows_each_trials_cost_its_thresholds_and_whether_its_first_rung_ranked(tmp_path):
    from search.halving import HALVING_FILE

    folder = tmp_path / "exp"
    plan = {"rungs": [[4, 1], [3, 2], [1, 6]], "unit_steps": 10, "unit_seconds": 30.0, "start_seconds": 5.0, "slots": 1, "eta": 2}
    Experiment(folder, tmp_path / "data", "extended", None, "group", 0.15, 0.1, 0, ("a", "b"), ("c",),
               search={"train_images": 40, "time_budget_min": 10.0, "cpus_per_trial": 1, "gpus_per_trial": 0,
                       "scheduler": "halving", "halving": {"plan": plan}}).write()
    calibrated = json.dumps({"threshold": 0.45, "seed_threshold": 0.7, "by_kind": [["histology", [["threshold", 0.3]]]]})
    trial = make_trial(folder, "trial_a", [0.3, 0.5], 2)
    lines = [{**json.loads(line), "images_per_s": 41.5, "unit_steps": 12, "calibrated": calibrated}
             for line in (trial / "result.json").read_text().splitlines()]
    (trial / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    for name in "bcd":
        make_trial(folder, f"trial_{name}", [0.2], 1)
    scores = {"0": {"a": [0.30, 0], "b": [0.31, 0], "c": [0.32, 0], "d": [0.20, 0]},
              "1": {"a": [0.50, 0], "b": [0.40, 0], "c": [0.45, 0]}}
    record = {"plan": plan, "rung": {"a": 2, "b": 1, "c": 1, "d": 0}, "scores": scores,
              "fate": {"b": "pruned at rung 1", "c": "pruned at rung 1", "d": "pruned at rung 0"}}
    (folder / HALVING_FILE).write_text(json.dumps(record) + "\n")
    page = render(gather(folder, gallery=False))
    assert "Spearman -0.50 over the 3 configurations scored at both" in page
    assert '<th data-type="number">images/s</th>' in page and 'data-value="41.5">41.5</td>' in page
    assert "0.45/0.70; histology threshold 0.3" in page
