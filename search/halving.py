"""Successive halving planned from the time budget: how many configurations
start, how far each rung trains them, and who goes on.

A search's trials report every `unit` steps (a fraction of an epoch). The
plan starts as many configurations (a multiple of the slots) as its
pruning rungs can afford for one unit; after each rung the best 1/eta of
them (at least one per slot; by validation on a small fixed subset of
images) go on, from their checkpoints, to eta times as many units; the
last rung's slots survivors train until the deadline, with a
learning-rate schedule planned for the units they will get (planned again
after each survivor's first unit, from that unit's time and the time left),
and score the
whole validation split every few units (full_every) and at their end.
The pruning rungs take at most PRUNING_SHARE of the budget. Pure functions
on numbers: search.scheduler applies a plan to Ray Tune's trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from nucjax.config import Validation

#: The most of the budget the pruning rungs may take; the rest is the survivors' (who also trained in the
#: pruning rungs: with 0.45 they get about 70% of the trial core-seconds).
PRUNING_SHARE = 0.45
#: The share of the budget planned for: the rest absorbs what the probe cannot see (the driver and
#: its reports share the CPUs) and its noise: on this 2-core machine, three 8-minute searches ran
#: their units 22% and 33% slower and 23% faster than planned.
PLANNED_SHARE = 0.85


#: The share of a survivor's time left that its re-plan (HalvingTrial.survivor) keeps in hand.
SURVIVOR_MARGIN = 0.05

#: The share of a survivor's time its whole-split validations may take (they come every full_every units).
#: Only a validated checkpoint can be chosen, and on held-out experiments a run peaks after 500-750 steps
#: and falls 0.02-0.03 within the next 300 (README, Measured): at 0.15 the 60-minute real search validated
#: its survivors 370 steps apart (at 148, 481, 851 and 925 steps) and could miss the peak; at 0.25 the
#: next validated them 222 steps apart and chose a checkpoint between two that 0.15 would have scored,
#: for about a tenth of the survivors' training steps.
FULL_VALIDATION_SHARE = 0.25

#: Where the scheduler records each trial's rung and fate, in the experiment folder.
HALVING_FILE = "halving.jsonl"


class PlanError(ValueError):
    """A budget too small for one round of halving; the message names the smallest that works."""


@dataclass(frozen=True)
class Rung:
    """configs enter the rung; each leaves it having trained `units` units in all."""

    configs: int
    units: int


@dataclass(frozen=True)
class HalvingPlan:
    """Rungs in order; the last is the survivors' (slots configurations to the deadline).

    unit_seconds: a pruning rung's unit (training, the subset validation, the report);
    full_seconds: one validation of the whole split, which survivors run every full_every units
    (and at their first and last) instead of the subset's."""

    rungs: tuple[Rung, ...]
    unit_steps: int
    unit_seconds: float
    start_seconds: float
    slots: int
    eta: int
    subset_seconds: float = 0.0
    full_seconds: float = 0.0
    full_every: int = 1

    @property
    def total_units(self) -> int:
        """The units a survivor trains, what every configuration's schedule is planned for."""
        return self.rungs[-1].units

    @property
    def survivor_unit_seconds(self) -> float:
        """A survivor's unit: training and the report, and its share of the whole-split validations."""
        return self.unit_seconds - self.subset_seconds + self.full_seconds / self.full_every

    def rung_of(self, units: int) -> int:
        """The rung a configuration that has trained `units` units is in (its last milestone reached)."""
        return next(i for i, rung in enumerate(self.rungs) if units <= rung.units)

    def slot_seconds(self) -> list[float]:
        """The planned slot-seconds of each rung: its configurations' new units and their (re)starts;
        the survivors' rung with its first whole-split validation."""
        before = 0
        spent = []
        for i, rung in enumerate(self.rungs):
            survivors = i == len(self.rungs) - 1 and i > 0
            unit = self.survivor_unit_seconds if survivors else self.unit_seconds
            extra = self.full_seconds if survivors else 0.0
            spent.append(rung.configs * ((rung.units - before) * unit + self.start_seconds + extra))
            before = rung.units
        return spent

    def describe(self) -> str:
        parts = [f"{r.configs} configuration{'s' * (r.configs != 1)} to {r.units * self.unit_steps} steps" for r in self.rungs]
        return (f"successive halving (eta {self.eta}, {self.slots} slots, {self.unit_steps}-step units of "
                f"~{self.unit_seconds:.0f} s; survivors validated whole every {self.full_every} units, "
                f"~{self.full_seconds:.0f} s): " + "; ".join(parts))


def _pruning_rungs(first_configs: int, slots: int, eta: int, first_units: int) -> list[Rung]:
    """The pruning rungs when first_configs start, the first rung `first_units`
    units long: each keeps the best 1/eta (rounded up, at least one per slot)."""
    rungs, configs, units = [], first_configs, first_units
    while configs > slots:
        rungs.append(Rung(configs, units))
        configs, units = max(slots, math.ceil(configs / eta)), units * eta
    return rungs


def full_every(full_s: float, train_s: float) -> int:
    """How many units apart a survivor validates the whole split, so the
    validations take about FULL_VALIDATION_SHARE of its time."""
    return max(1, math.ceil(full_s / (FULL_VALIDATION_SHARE * max(train_s, 1e-9))))


def plan_halving(budget_s: float, slots: int, unit_steps: int, unit_s: float, start_s: float, eta: int = 3,
                 max_rounds: int = 6, spent_s: float = 0.0, first_units: int = 1, subset_s: float = 0.0,
                 full_s: float = 0.0) -> HalvingPlan:
    """The plan for the budget left (seconds), `slots` trials at a time,
    units of unit_steps steps taking unit_s seconds each (training, the
    subset validation of subset_s seconds and the report) and start_s
    seconds to (re)start a trial; full_s: one whole-split validation
    (survivors'). The most configurations whose pruning rungs fit
    PRUNING_SHARE of the budget start. PlanError when not even one round
    fits (slots * eta configurations, survivors getting at least eta times
    the units of the last pruning rung), naming the smallest whole budget,
    with the spent_s already gone (the probe). first_units: how long the
    first rung trains (enough steps to be past the learning-rate warm-up,
    or every score there is noise)."""
    if slots < 1 or eta < 2 or unit_s <= 0 or unit_steps < 1:
        raise ValueError("slots must be >= 1, eta >= 2, unit_steps >= 1 and unit_s > 0")
    slot_seconds = budget_s * slots * PLANNED_SHARE
    every = full_every(full_s, unit_s - subset_s) if full_s else 1

    def plan(rungs: list[Rung]) -> HalvingPlan:
        return HalvingPlan(tuple(rungs), unit_steps, unit_s, start_s, slots, eta, subset_s, full_s, every)

    def pruning_cost(rungs: list[Rung]) -> float:
        return sum(plan(rungs + [Rung(slots, rungs[-1].units)]).slot_seconds()[:-1])

    for first_configs in range(slots * eta**max_rounds, slots * eta - 1, -slots):
        pruning = _pruning_rungs(first_configs, slots, eta, first_units)
        cost = pruning_cost(pruning)
        if cost > PRUNING_SHARE * slot_seconds:
            continue
        survivor_unit = plan(pruning).survivor_unit_seconds
        survivors = pruning[-1].units + int(((slot_seconds - cost) / slots - start_s - full_s) // survivor_unit)
        if survivors >= pruning[-1].units * eta:
            return plan(pruning + [Rung(slots, survivors)])
    one_round = pruning_cost(_pruning_rungs(slots * eta, slots, eta, first_units))
    survivor_unit = plan([]).survivor_unit_seconds
    needed = (one_round + slots * (start_s + full_s + (eta - 1) * first_units * survivor_unit)) / (slots * PLANNED_SHARE)
    needed = max(needed, one_round / (PRUNING_SHARE * slots * PLANNED_SHARE))
    raise PlanError(f"a budget of {(budget_s + spent_s) / 60:.1f} minutes is too small for successive halving with "
                    f"{slots} slot{'s' * (slots != 1)} ({unit_steps}-step units of ~{unit_s:.0f} s, trials starting in "
                    f"~{start_s:.0f} s); the smallest that works is {math.ceil((needed + spent_s) / 60)} minutes")


def validation_subset(groups: list[str], size: int, first: int = 0) -> tuple[int, ...]:
    """Positions of a small fixed validation subset, the same for every
    trial: the first `first` images (the film's), then one image of each
    acquisition group in turn, in the order the groups appear, until
    `size` (or every image) is taken: every group is represented."""
    order = list(range(min(first, len(groups))))
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        if i not in order:
            by_group.setdefault(group, []).append(i)
    queues = list(by_group.values())
    while len(order) < min(size, len(groups)) and any(queues):
        for queue in queues:
            if queue and len(order) < size:
                order.append(queue.pop(0))
    return tuple(order)


@dataclass(frozen=True)
class HalvingTrial:
    """What a trial of a halving search needs beyond its params: the
    validation subset its pruning rungs score on (at the nucleus scale the
    masks give: a barely trained network's own size estimate is noise, and
    the first pass would double the cost), the last unit scored on it;
    after it, the survivors score the whole split as prediction does, at
    their first unit, every full_every units and at their last
    (total_units); deadline: the wall-clock time (time.time()) by which a
    trial stops training and validates what it has."""

    subset: tuple[int, ...]
    subset_until: int
    full_every: int = 1
    total_units: int = 0
    deadline: float | None = None
    full_seconds: float = 0.0

    @classmethod
    def of(cls, plan: HalvingPlan, subset, deadline: float | None = None) -> "HalvingTrial":
        """A plan's trials: the subset until its last pruning rung, then its survivors' cadence."""
        return cls(tuple(subset), plan.rungs[-2].units, plan.full_every, plan.total_units, deadline, plan.full_seconds)

    def survivor(self, done: int, unit_s: float, now: float) -> "HalvingTrial":
        """This trial as a survivor that has trained `done` units, the last
        in unit_s seconds once compiled (the machine as it is now, not the
        probe's), planned anew to end at the deadline: the most units that
        fit with the whole-split validations they will run (the unit just
        trained, every full_every-th, the last). The plan's units were
        planned for PLANNED_SHARE of the budget from the probe's timing;
        here the time left is known. SURVIVOR_MARGIN keeps a slower unit
        inside the deadline."""
        if self.deadline is None:
            return self
        left = (self.deadline - now) * (1 - SURVIVOR_MARGIN)

        def cost(units: int) -> float:
            last = done + units
            cadence = sum(1 for epoch in range(done + 1, last + 1) if (epoch - self.subset_until) % self.full_every == 0)
            off_cadence_end = (last - self.subset_until) % self.full_every != 0
            return units * unit_s + (1 + cadence + off_cadence_end) * self.full_seconds

        units = 1
        while cost(units + 1) <= left:
            units += 1
        return dataclasses.replace(self, total_units=done + units)

    def validate_on(self, epoch: int, images: int) -> Validation:
        if epoch <= self.subset_until:
            return Validation(tuple(self.subset), at_true_scale=True)
        since = epoch - self.subset_until
        whole = since == 1 or since % self.full_every == 0 or epoch >= self.total_units
        return Validation(tuple(range(images)) if whole else ())


def plan_record(plan: HalvingPlan) -> dict:
    return {"rungs": [[r.configs, r.units] for r in plan.rungs], "unit_steps": plan.unit_steps,
            "unit_seconds": plan.unit_seconds, "start_seconds": plan.start_seconds, "slots": plan.slots, "eta": plan.eta,
            "subset_seconds": plan.subset_seconds, "full_seconds": plan.full_seconds, "full_every": plan.full_every}


def read_plan(record: dict) -> HalvingPlan:
    return HalvingPlan(tuple(Rung(*r) for r in record["rungs"]), record["unit_steps"], record["unit_seconds"],
                       record["start_seconds"], record["slots"], record["eta"], record.get("subset_seconds", 0.0),
                       record.get("full_seconds", 0.0), record.get("full_every", 1))


def read_halving(folder) -> dict | None:
    """The latest halving record (search.scheduler) of an experiment folder, or None."""
    path = Path(folder) / HALVING_FILE
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written
    return None


def fates(record: dict) -> dict[str, str]:
    """Every trial's fate in a halving record: pruned at rung r, error, survivor, or at rung r (still going)."""
    last = len(record["plan"]["rungs"]) - 1
    return {t: record["fate"].get(t, "survivor" if r == last else f"at rung {r}") for t, r in record["rung"].items()}


def rung_counts(record: dict) -> list[tuple[int, int, int]]:
    """(configurations that entered, that left for the next rung, steps each had when leaving) per rung."""
    plan = read_plan(record["plan"])
    reached = list(record["rung"].values())
    return [(sum(1 for r in reached if r >= i), sum(1 for r in reached if r > i), rung.units * plan.unit_steps)
            for i, rung in enumerate(plan.rungs)]
