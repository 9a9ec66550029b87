"""The search on a real two-node Ray cluster on loopback: trials on both
nodes, the report refreshed as they run, a killed trial resuming from its
checkpoint, an interrupted search resumed with --resume, and a resource
request no node can hold. What needs no cluster is in test_search_setup.py.

The cluster is started once for this module, by `ray start`, in separate
processes: this test process never imports Ray's driver or starts JAX in it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PORT = 6391


def ray_env(tmp_root: Path, cache: Path) -> dict:
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp_root),
                "NUCJAX_CACHE": str(cache)})
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on 127.0.0.1, one CPU each, told apart by a custom resource."""
    # Ray's sockets live under its temp dir, and a socket's path may not pass 107 bytes: pytest's
    # per-worker folders are too deep for it.
    tmp_root = Path(tempfile.mkdtemp(prefix="nucjax-ray-"))
    env = ray_env(tmp_root, tmp_path_factory.getbasetemp() / "cache")  # the cache the other tests use
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    try:
        ray_start(["--head", "--port", str(PORT), "--include-dashboard", "false", "--temp-dir", str(tmp_root),
                   "--resources", '{"head_node": 1}'] + common, env)
        ray_start(["--address", f"127.0.0.1:{PORT}", "--resources", '{"second_node": 1}'] + common, env)
        yield {"address": f"127.0.0.1:{PORT}", "env": env}
    finally:  # a node that failed to start must not leave the other running
        stop_cluster(tmp_root)
        shutil.rmtree(tmp_root, ignore_errors=True)


def ray_start(flags: list[str], env: dict, attempts: int = 3) -> None:
    """`ray start`, tried again when it fails: on a loaded machine (the other test
    worker compiling) a node may miss its deadline to register."""
    for _ in range(attempts):
        done = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", *flags], env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
    raise AssertionError(f"ray start {' '.join(flags)} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")


def stop_cluster(tmp_root: Path) -> None:
    """Stop this test's Ray processes only: `ray stop` would stop every Ray
    cluster of the user on the machine, a search the user runs included."""
    import psutil

    ours = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_root) in " ".join(p.info["cmdline"] or [])]
    for process in ours:
        process.terminate()
    _, alive = psutil.wait_procs(ours, timeout=3)  # some Ray processes ignore SIGTERM: do not wait long
    for process in alive:
        process.kill()


def search(cluster, storage: Path, *flags, wait: bool = True, timeout: int = 300):
    command = [sys.executable, "-m", "search.run", "--address", cluster["address"], "--storage", str(storage),
               "--verbose", "0", *flags]
    process = subprocess.Popen(command, cwd=ROOT, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def results(storage: Path) -> list[dict]:
    with open(storage / "results.csv") as handle:
        return list(csv.DictReader(handle))


def progress(trial_dir: Path) -> list[dict]:
    path = trial_dir / "progress.csv"
    if not path.is_file():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_trials_run_on_both_nodes_and_checkpoint_to_shared_storage(cluster, tmp_path):
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
    predicted = subprocess.run([sys.executable, "-m", "nucjax.predict", "--checkpoint", best["checkpoint"], "--data", data,
                                "--split", "val", "--out", str(tmp_path / "val.csv")],
                               env={**cluster["env"], "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.strip().splitlines()[-1] == f"Kaggle score: {float(best['score']):.4f}"

    check_folds(cluster, storage, data, output, tmp_path)

    # With no arguments, ensemble.predict takes this (the latest) experiment, its fold
    # models as the ensemble, and predicts the test images the search held back.
    done = subprocess.run([sys.executable, "-m", "ensemble.predict", "--compare"], cwd=tmp_path, env={**cluster["env"], "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from nucjax.submission import read_submission

    test_ids = json.loads((storage / "experiment.json").read_text())["test_ids"]
    assert test_ids and set(read_submission(tmp_path / "submission.csv")) == set(test_ids)
    assert "2 fold models" in done.stderr and done.stdout.strip().splitlines()[-1].startswith("Kaggle score: ")
    assert "mean of 2 (all)" in done.stdout and "intersect of 2 (all)" in done.stdout
    check_report(cluster, storage, tmp_path)
    check_tensorboard(storage)


def check_folds(cluster, storage: Path, data: str, output: str, cwd: Path) -> None:
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
    env = {**cluster["env"], "PYTHONPATH": str(ROOT)}
    pooled = 0.0
    for fold in folds:
        done = subprocess.run([sys.executable, "-m", "nucjax.predict", "--checkpoint", fold["checkpoint"], "--data", data,
                               "--split", "val", "--out", str(cwd / "fold.csv")], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"predicting {fold['images']} images" in done.stderr
        assert done.stdout.strip().splitlines()[-1] == f"Kaggle score: {float(fold['score']):.4f}"
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


def check_report(cluster, storage: Path, cwd: Path) -> None:
    """The search wrote its report; after ensemble.predict --compare (run by the caller), search.report (the latest
    experiment by default) adds the failure gallery and the comparison, and Chromium shows it all."""
    from search.browser import find_chromium

    written = (storage / "report.html").read_text()
    assert "<h2 id='trials'>" in written and "finished" in written
    env = {**cluster["env"], "PYTHONPATH": str(ROOT)}
    shot = cwd / "report.png"
    flags = ["--screenshot", str(shot)] if find_chromium() else []
    done = subprocess.run([sys.executable, "-m", "search.report", *flags], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
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


def trial_processes(cluster) -> list:
    """This cluster's trial processes: its workers inherit RAY_TMPDIR from `ray start`
    (a search the user runs beside the tests is left alone)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "ray::" in line and ("ImplicitFunc" in line or "run_trial" in line):
            try:
                if process.environ().get("RAY_TMPDIR") == cluster["env"]["RAY_TMPDIR"]:
                    found.append(process)
            except psutil.Error:
                continue
    return found


def staged_epochs(cluster, since: float) -> int:
    """Epochs the newest trial has reported, read where Tune writes them at
    once (its staging folder under the cluster's temp dir): the experiment
    folder gets them only at Tune's next sync, often after a smoke trial ends."""
    staged = [p for p in Path(cluster["env"]["RAY_TMPDIR"]).rglob("driver_artifacts/trial_*/progress.csv")
              if p.stat().st_mtime >= since]
    return max((len(progress(p.parent)) for p in staged), default=0)


def test_a_killed_trial_resumes_from_its_last_checkpoint(cluster, tmp_path):
    storage = tmp_path / "exp"
    started = time.time()
    process = search(cluster, storage, "--space", "extended", "--samples", "1", "--max-epochs", "3", wait=False)
    trial = lambda: next(iter(sorted(storage.glob("trial_*"))), None)  # noqa: E731
    # Killed while it trains its later epochs (about 3 s each once compiled).
    wait_for(lambda: staged_epochs(cluster, started) >= 1, 240, "a reported epoch", every=0.2)
    victims = trial_processes(cluster)
    assert victims, "no trial process found"
    for victim in victims:
        victim.kill()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    epochs = [int(float(row["epoch"])) for row in progress(trial())]
    assert epochs[-1] == 3
    # Every epoch is reported, and at most one is trained twice.
    assert sorted(set(epochs)) == [1, 2, 3] and len(epochs) - 3 <= 1


def test_an_interrupted_search_resumes(cluster, tmp_path):
    storage = tmp_path / "exp"
    process = search(cluster, storage, "--space", "extended", "--samples", "2", "--max-concurrent", "1",
                     "--max-epochs", "2", wait=False)
    report = storage / "report.html"  # refreshed as trials report: it shows the search so far
    shows_first_trial = lambda page: "running (epoch 1)" in page or "finished" in page  # noqa: E731
    wait_for(lambda: report.is_file() and "refreshes as trials report" in report.read_text()
             and shows_first_trial(report.read_text()), 240, "the first trial in the running search's report")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    finished = lambda: [r for r in results(storage) if r.get("epochs_run") == "2"]  # noqa: E731
    if (storage / "results.csv").exists():  # Tune may report what it had when interrupted
        assert len(finished()) < 2
    code, output = search(cluster, storage, "--resume")
    assert code == 0, output
    assert len(results(storage)) == 2 and len(finished()) == 2


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


def run_halving(cluster, storage: Path, *flags: str, wait: bool = True):
    """tests/halving_trials.py on the cluster: its JSON, or the running process (wait=False)."""
    command = [sys.executable, str(ROOT / "tests" / "halving_trials.py"), cluster["address"], str(storage), *flags]
    options = {"cwd": ROOT, "env": {**cluster["env"], "PYTHONPATH": str(ROOT)}, "text": True}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
    done = subprocess.run(command, capture_output=True, timeout=240, **options)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_halving(found: dict) -> dict:
    """Each rung kept its best (qualities 0.9 and 0.8 survive; 0.7, 0.6 leave at rung 1), and every trial went on
    from its checkpoint, never from scratch, to its rung's end. The trials by quality."""
    by_quality = {t["quality"]: (trial_id, t) for trial_id, t in found["trials"].items()}
    fate = {quality: found["fates"][trial_id] for quality, (trial_id, _) in by_quality.items()}
    assert {q for q, f in fate.items() if f == "survivor"} == {0.9, 0.8}
    assert {q for q, f in fate.items() if f == "pruned at rung 1"} == {0.7, 0.6}
    assert {q for q, f in fate.items() if f == "pruned at rung 0"} == {0.5, 0.3, 0.2, 0.1}
    for quality, (_, trial) in by_quality.items():
        reached = {"survivor": 4, "pruned at rung 1": 2, "pruned at rung 0": 1}[fate[quality]]
        # Iterations, as the trial logged them, only go up, to the rung's end. (A trial interrupted
        # mid-iteration repeats it: its checkpoint is the last iteration it reported.)
        iterations = trial["iterations"]
        assert iterations[0] == 1 and iterations[-1] == reached and iterations == sorted(iterations)
    return {quality: trial for quality, (_, trial) in by_quality.items()}


def test_successive_halving_pauses_resumes_keeps_the_best_and_survives_an_interruption(cluster, tmp_path):
    """search.scheduler on the cluster, over trivial trials (tests/halving_trials.py): each rung waits for
    all its trials, the best go on from their checkpoints, the rest stop. Interrupted while trials wait at
    the first rung and resumed: Tune saves no scheduler state, so the scheduler takes its rungs, scores and
    fates from halving.jsonl, and the paused trials (requeued as pending) go on or stop as their rung decides."""
    from search.halving import fates, read_halving

    storage = tmp_path / "halving"
    process = run_halving(cluster, storage, "--slow", wait=False)
    paused = lambda: (read_halving(storage) or {}).get("scores", {}).get("0", {})  # noqa: E731
    wait_for(lambda: len(paused()) >= 3, 180, "trials paused at the first rung")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    interrupted = fates(read_halving(storage))
    assert "survivor" not in interrupted.values()  # stopped before the last rung
    trials = check_halving(run_halving(cluster, storage, "--resume"))
    # Eight trials on two slots: the rungs' waits paused some, which came back from their checkpoints.
    assert max(t["restarts"] for t in trials.values()) >= 1
