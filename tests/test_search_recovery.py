"""The search survives what happens to long runs, on a real two-node Ray
cluster on loopback (its own, beside test_search.py's): a killed trial
resumes from its last checkpoint, an interrupted search resumes with
--resume, and successive halving pauses and resumes trials across an
interruption.

The cluster is started once for this module, by `ray start`, in separate
processes: this test process never imports Ray's driver or starts JAX in it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback_cluster import ROOT, loopback_cluster, progress, results, search, trial_processes, wait_for

PORT = 6491


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with loopback_cluster(PORT, tmp_path_factory.getbasetemp() / "cache") as started:
        yield started


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
