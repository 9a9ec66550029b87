"""Run by test_search_recovery.py on its Ray cluster: successive halving
(search.scheduler) over eight trivial trials whose score grows with their
'quality', each resuming from its checkpoint when paused. Prints, as JSON,
each trial's quality, the iterations it ran (as it logged them itself: Tune's
history now and then lacks rows across a pause or an interruption) and
restarts, and the fates.
With --slow, every iteration takes a quarter second (time to interrupt the
search); with --resume, the interrupted search in STORAGE goes on.

    python tests/halving_trials.py ADDRESS STORAGE [--slow] [--resume]"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from search.halving import HalvingPlan, Rung, fates, read_halving
from search.scheduler import HalvingScheduler

PLAN = HalvingPlan((Rung(8, 1), Rung(4, 2), Rung(2, 4)), unit_steps=1, unit_seconds=0.1, start_seconds=1.0, slots=2, eta=2)


def trial(config):
    start, restarts = 0, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "state.json").read_text())
        start, restarts = state["iteration"], state["restarts"] + 1
    log = Path(config["log_dir"]) / f"{config['quality']}.jsonl"
    for iteration in range(start + 1, PLAN.total_units + 1):
        with log.open("a") as lines:
            lines.write(json.dumps({"iteration": iteration, "restarts": restarts}) + "\n")
        folder = tempfile.mkdtemp()
        (Path(folder) / "state.json").write_text(json.dumps({"iteration": iteration, "restarts": restarts}))
        time.sleep(config.get("pause_s", 0.0))
        score = config["quality"] * iteration / PLAN.total_units
        tune.report({"score": score, "loss": 1 - score, "iteration": iteration, "restarts": restarts},
                    checkpoint=tune.Checkpoint.from_directory(folder))


def main(address: str, storage: str, slow: bool = False, resume: bool = False) -> None:
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    qualities = [0.3, 0.9, 0.1, 0.7, 0.5, 0.8, 0.2, 0.6]
    log_dir = Path(storage).parent / f"{Path(storage).name}_iterations"
    log_dir.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_resources(trial, {"cpu": 1})
    if resume:
        tuner = tune.Tuner.restore(storage, trainable=trainable)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"quality": tune.grid_search(qualities), "pause_s": 0.25 if slow else 0.0,
                         "log_dir": str(log_dir)},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=HalvingScheduler(PLAN, Path(storage))),
            run_config=tune.RunConfig(name=Path(storage).name, storage_path=str(Path(storage).parent), verbose=0),
        )
    results = tuner.fit()
    record = read_halving(storage)
    out = {"fates": fates(record), "trials": {}}
    for result in results:
        quality = result.config["quality"]
        ran = [json.loads(line) for line in (log_dir / f"{quality}.jsonl").read_text().splitlines()]
        out["trials"][result.metrics["trial_id"]] = {
            "quality": quality, "iterations": [r["iteration"] for r in ran],
            "restarts": max(r["restarts"] for r in ran)}
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main(sys.argv[1], sys.argv[2], "--slow" in sys.argv[3:], "--resume" in sys.argv[3:])
