"""Successive halving as a Ray Tune scheduler: trials pause at their rung's
milestone (search.halving's plan) until every configuration of the rung
has reported there; then the best go on from their checkpoints and the
rest stop. A trial's fate (pruned at rung r, survivor, errored) and the
rung each reached are appended to halving.jsonl in the experiment after
every decision, so the report shows them, and a resumed search (Tune
saves no scheduler state) takes its rungs, scores and fates from there.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.halving import HALVING_FILE, HalvingPlan, plan_record, read_halving


def _rank_key(result: dict, metric: str) -> list[float]:
    """What a milestone is ranked by: the metric, then, on a tie (every
    early model scoring 0 alike), the lower training loss."""
    loss = result.get("loss")
    return [float(result[metric]), -float(loss) if loss == loss and loss is not None else float("-inf")]


class HalvingScheduler(FIFOScheduler):
    """Successive halving of a HalvingPlan over the trials Tune adds (the
    plan's first rung's worth), by the metric each reports at a milestone."""

    # One result at a time: a buffered batch would run past a milestone (as Ray's HyperBand says too).
    _supports_buffered_results = False

    def __init__(self, plan: HalvingPlan, folder: Path | None = None, metric: str = "score", mode: str = "max"):
        super().__init__()
        self.plan = plan
        self.folder = Path(folder) if folder is not None else None
        self._score_key, self._sign = metric, 1 if mode == "max" else -1
        self.rung: dict[str, int] = {}  # trial id -> the rung it is in
        self.scores: dict[str, dict[str, list]] = {}  # rung index (str, as in JSON) -> {trial id: _rank_key at its milestone}
        self.fate: dict[str, str] = {}  # trial id -> 'pruned at rung r', 'error'
        self.trials: dict[str, Trial] = {}
        self._loaded = False  # the halving record read (see _load)

    # -- state, written after every decision
    def _save(self) -> None:
        if self.folder is None:
            return
        record = {"plan": plan_record(self.plan), "rung": self.rung, "scores": self.scores, "fate": self.fate}
        self.folder.mkdir(parents=True, exist_ok=True)
        # Appended, one line per decision: a reader never meets a half-written record (it takes the last
        # whole line), and Tune's resume, which puts back the experiment's .json files as they were when
        # it started (its staging copies), leaves this one alone.
        with open(self.folder / HALVING_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")

    def _load(self) -> None:
        """The decisions recorded before an interruption, once, when the scheduler starts with none."""
        if self._loaded or self.folder is None:
            return
        self._loaded = True
        record = read_halving(self.folder)
        if not self.rung and record is not None:
            self.rung, self.scores, self.fate = record["rung"], record["scores"], record["fate"]

    # -- Tune's hooks
    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._load()
        self.trials[trial.trial_id] = trial
        self.rung.setdefault(trial.trial_id, 0)
        if trial.status == Trial.PENDING and trial.trial_id not in self.fate and not self._promoted(trial.trial_id):
            # A resumed search's trial that waited at its milestone: Tune requeues it as pending and would
            # start every pending trial, so it waits as paused for its rung's decision.
            trial.set_status(Trial.PAUSED)
        self._save()

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        rung = self.rung.get(trial.trial_id, 0)
        if rung == len(self.plan.rungs) - 1 or result.get("training_iteration", 0) < self.plan.rungs[rung].units:
            return TrialScheduler.CONTINUE
        self.scores.setdefault(str(rung), {})[trial.trial_id] = _rank_key(result, self._score_key)
        return self._settle(tune_controller, rung, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.fate[trial.trial_id] = "error"
        self._settle(tune_controller, self.rung.get(trial.trial_id, 0), None)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        if self.rung.get(trial.trial_id, 0) < len(self.plan.rungs) - 1:
            # Ended before its milestone (its epochs ran out): it competes with what it reached.
            if result and self._score_key in result:
                self.scores.setdefault(str(self.rung[trial.trial_id]), {})[trial.trial_id] = _rank_key(result, self._score_key)
            self._settle(tune_controller, self.rung.get(trial.trial_id, 0), None)
        self._save()

    def choose_trial_to_run(self, tune_controller):
        """A new configuration first, then a promoted one paused at its last milestone."""
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.trial_id in self.fate and trial.status in (Trial.PAUSED, Trial.PENDING):
                tune_controller.stop_trial(trial)  # pruned while the search was interrupted
        if sum(1 for trial in trials if trial.status == Trial.RUNNING) >= self.plan.slots:
            return None  # the plan's slots (Tune's own limit would count paused trials and starve the rung)
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in trials:
                if trial.status == status and self._promoted(trial.trial_id):
                    return trial
        return None

    def __getstate__(self):
        # Tune pickles the scheduler with the Tuner: the live trials stay out.
        return {**self.__dict__, "trials": {}, "_loaded": False}

    def debug_string(self) -> str:
        return self.plan.describe()

    # -- decisions
    def _promoted(self, trial_id: str) -> bool:
        """In a later rung than the last milestone it scored at: it has more to train."""
        rung = self.rung.get(trial_id, 0)
        return trial_id not in self.fate and trial_id not in self.scores.get(str(rung), {})

    def _settle(self, tune_controller, rung: int, current: Trial | None) -> str:
        """Once every live configuration of the rung has scored, promote the
        best and stop the rest; the action for `current` (PAUSE while others
        have yet to score)."""
        members = [t for t, r in self.rung.items() if r == rung and t not in self.fate]
        scored = self.scores.get(str(rung), {})
        # Tune adds trials as slots free up: the first rung waits for all its configurations.
        if any(t not in scored for t in members) or (rung == 0 and len(self.rung) < self.plan.rungs[0].configs):
            self._save()
            return TrialScheduler.PAUSE
        ranked = sorted(members, key=lambda t: tuple(-self._sign * v for v in scored[t]))
        keep = self.plan.rungs[rung + 1].configs if rung + 1 < len(self.plan.rungs) else len(ranked)
        action = TrialScheduler.PAUSE
        for trial_id in ranked[keep:]:
            self.fate[trial_id] = f"pruned at rung {rung}"
            if current is not None and trial_id == current.trial_id:
                action = TrialScheduler.STOP
            elif trial_id in self.trials and self.trials[trial_id].status in (Trial.PAUSED, Trial.PENDING):
                # Paused, or pending after a resume (Tune requeues a paused trial as pending).
                tune_controller.stop_trial(self.trials[trial_id])
        for trial_id in ranked[:keep]:
            self.rung[trial_id] = rung + 1
            if current is not None and trial_id == current.trial_id:
                action = TrialScheduler.CONTINUE
        self._save()
        return action
