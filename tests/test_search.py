"""The search on a real two-node Ray cluster on loopback: trials on both
nodes, their checkpoints in shared storage, the winner refit on group folds
side by side, the fold models as the ensemble, the report; the simple space;
a resource request no node can hold. Trials killed, searches interrupted and
resumed, and successive halving on a cluster are in test_search_recovery.py;
what needs no cluster is in test_search_setup.py.

The cluster is started once for this module, by `ray start`, in separate
processes, and the searches run on it as commands: this test process never
imports Ray's driver. What reads a finished search (nucjax.predict,
ensemble.predict, search.report) runs in this process, through each
command's main(): a fresh process of each would spend 5-7 s starting JAX
again.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from loopback_cluster import loopback_cluster, results, search

from ensemble.predict import main as ensemble_predict
from nucjax.predict import main as predict
from search.report import main as report

PORT = 6391


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with loopback_cluster(PORT, tmp_path_factory.getbasetemp() / "cache") as started:  # the cache the other tests use
        yield started


def run(main, capsys, *argv) -> tuple[str, str]:
    """A command's main() in this process: its stdout and stderr; it must not exit."""
    capsys.readouterr()
    main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_trials_run_on_both_nodes_and_checkpoint_to_shared_storage(cluster, tmp_path, capsys, monkeypatch):
    storage = tmp_path / "runs" / "extended-test"  # where ensemble.predict looks by default
    code, output = search(cluster, storage, "--space", "extended", "--samples", "2", "--max-epochs", "1", "--folds", "2")
    assert code == 0, output
    rows = results(storage)
    assert len(rows) == 2 and all(float(r["score"]) >= 0 for r in rows)
    assert len({r["node"] for r in rows}) == 2  # one CPU per node: one trial each
    # The first configuration is nucjax.train's defaults (the smoke space's first width, where the default does not fit).
    from search.spaces import contender, search_space

    first = contender(search_space("extended", smoke=True))
    assert any(all(row[key] == str(value) for key, value in first.items()) for row in rows), rows
    for row in rows:
        checkpoint = Path(row["checkpoint"])
        assert checkpoint.is_relative_to(storage) and (checkpoint / "checkpoint.json").is_file()
    assert (storage / "scores.png").is_file() and (storage / "experiment.json").is_file()
    assert "best checkpoint:" in output
    # The score the search reported is the one nucjax.predict gives for the checkpoint on its validation images.
    best = rows[0]
    data = json.loads((storage / "experiment.json").read_text())["data"]
    predicted, _ = run(predict, capsys, "--checkpoint", best["checkpoint"], "--data", data, "--split", "val",
                       "--out", tmp_path / "val.csv")
    assert predicted.strip().splitlines()[-1] == f"Kaggle score: {float(best['score']):.4f}"

    check_folds(storage, data, output, tmp_path, capsys)

    # With no arguments, ensemble.predict takes this (the latest) experiment, its fold
    # models as the ensemble, and predicts the test images the search held back.
    monkeypatch.chdir(tmp_path)
    out, err = run(ensemble_predict, capsys, "--compare")
    from nucjax.submission import read_submission

    test_ids = json.loads((storage / "experiment.json").read_text())["test_ids"]
    assert test_ids and set(read_submission(tmp_path / "submission.csv")) == set(test_ids)
    assert "2 fold models" in err and out.strip().splitlines()[-1].startswith("Kaggle score: ")
    assert "mean of 2 (all)" in out and "intersect of 2 (all)" in out
    check_report(storage, tmp_path, capsys)
    check_tensorboard(storage)


def check_folds(storage: Path, data: str, output: str, cwd: Path, capsys) -> None:
    """The winner refit on 2 folds: the fold trials ran side by side (one per node, at
    once), every image outside the test set validated once, the out-of-fold score is
    nucjax.predict --split val of each fold model pooled, and the fold models are the
    experiment's ensemble."""
    with open(storage / "folds.csv") as handle:
        folds = list(csv.DictReader(handle))
    assert [int(f["fold"]) for f in folds] == [0, 1] and not any(f["error"] for f in folds)
    assert len({f["node"] for f in folds}) == 2
    spans = []
    for fold in folds:
        rows = [json.loads(line) for line in (storage / "folds" / fold["trial"] / "result.json").read_text().splitlines() if line]
        spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans  # they overlapped
    record = json.loads((storage / "experiment.json").read_text())
    oof = record["search"]["folds"]["oof"]
    assert oof["images"] == sum(int(f["images"]) for f in folds) == 24 - len(record["test_ids"])
    pooled = 0.0
    for fold in folds:
        out, err = run(predict, capsys, "--checkpoint", fold["checkpoint"], "--data", data, "--split", "val",
                       "--out", cwd / "fold.csv")
        assert f"predicting {fold['images']} images" in err
        assert out.strip().splitlines()[-1] == f"Kaggle score: {float(fold['score']):.4f}"
        pooled += float(fold["score"]) * int(fold["images"])
    assert oof["score"] == pytest.approx(pooled / oof["images"])
    assert f"out-of-fold score: {oof['score']:.4f} over {oof['images']} images in 2 folds" in output
    ensemble = json.loads((storage / "ensemble.json").read_text())
    assert sorted(ensemble["members"]) == sorted(f["checkpoint"] for f in folds) and ensemble["combine"] == "mean"
    # One scale and the multi-scale candidate both calibrated on the pooled maps; the one kept is the ensemble's.
    tried = record["search"]["folds"]["ensemble"]["tried"]
    assert [entry["scales"] for entry in tried] == [[1.0], [0.75, 1.0, 1.5]] and "gain" in tried[1]
    assert [entry["scales"] for entry in tried if entry["kept"]] == [ensemble["scales"]]
    assert f"scales 1: {tried[0]['score']:.4f}" in output


def check_report(storage: Path, cwd: Path, capsys) -> None:
    """The search wrote its report; after ensemble.predict --compare (run by the caller), search.report (the latest
    experiment by default) adds the failure gallery and the comparison, and Chromium shows it all."""
    from search.browser import find_chromium

    written = (storage / "report.html").read_text()
    assert "<h2 id='trials'>" in written and "finished" in written
    shot = cwd / "report.png"
    flags = ["--screenshot", shot] if find_chromium() else []
    run(report, capsys, *flags)  # in cwd, where the latest experiment is under ./runs
    page = (storage / "report.html").read_text()
    assert page.count("<figure>") >= 2 and "Not run yet" not in page  # the failure gallery, the comparison
    assert re.search(r"<figcaption>[0-9.]+ &middot; \w+ &middot; (native scale|scale [0-9.]+) &middot;", page)  # each image's scale
    if not flags:
        pytest.skip("no Chromium (.ci/run installs it): the report was checked as HTML only")
    assert shot.stat().st_size > 20_000
    from search.browser import Page

    with Page() as browser:
        browser.open((storage / "report.html").as_uri())
        assert browser.evaluate("document.querySelectorAll('table.sortable')[0].tBodies[0].rows.length") == 2
        assert browser.evaluate("document.images.length") >= 5  # curves, failures, film, comparison
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        for section in ("summary", "folds", "trials", "curves", "failures", "film", "ensemble"):
            assert browser.evaluate(f"!!document.getElementById('{section}')")
        scores = "Array.from(document.querySelectorAll('table.sortable')[0].tBodies[0].rows).map(r => parseFloat(r.cells[3].dataset.value))"
        browser.evaluate("document.querySelectorAll('table.sortable')[0].tHead.rows[0].cells[3].click()")
        descending = browser.evaluate(scores)
        browser.evaluate("document.querySelectorAll('table.sortable')[0].tHead.rows[0].cells[3].click()")
        assert browser.evaluate(scores) == sorted(descending) and descending == sorted(descending, reverse=True)


def check_tensorboard(storage: Path) -> None:
    """Every trial folder holds TensorBoard events with the validation score of every epoch it reported."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    for trial in sorted(storage.glob("trial_*")):
        events = list(trial.glob("events.out.tfevents.*"))
        assert events, f"{trial.name}: no TensorBoard events"
        steps = set()
        for path in events:
            data = path.read_bytes()
            offset = 0
            while offset + 12 <= len(data):  # TFRecords: length, its CRC, the record, its CRC
                (length,) = struct.unpack("<Q", data[offset : offset + 8])
                event = Event.FromString(data[offset + 12 : offset + 12 + length])
                offset += 12 + length + 4
                steps |= {event.step for v in event.summary.value if v.tag.endswith("/score")}
        reported = {json.loads(line)["training_iteration"] for line in (trial / "result.json").read_text().splitlines() if line}
        assert reported and reported <= steps


def test_the_simple_space_needs_no_training(cluster, tmp_path):
    storage = tmp_path / "exp"
    code, output = search(cluster, storage, "--space", "simple", "--samples", "3")
    assert code == 0, output
    rows = results(storage)
    assert len(rows) == 3 and all(0 <= float(r["score"]) <= 1 for r in rows)


def test_an_impossible_resource_request_is_refused(cluster, tmp_path):
    code, output = search(cluster, tmp_path / "exp", "--gpus-per-trial", "1")
    assert code == 2
    assert "no node can hold a trial" in output
