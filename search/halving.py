"""Successive halving planned from the time budget: how many configurations
start, how far each rung trains them, and who goes on.

A search's trials report every `unit` steps (a fraction of an epoch). The
plan starts as many configurations (a multiple of the slots) as the budget
affords for one unit; after each rung the best 1/eta of them (rounded up
to whole slots; by validation on a small fixed subset of images) go on, from
their checkpoints, to eta times as many units. The last cut waits until
the learning curves have settled (settle_units) and ranks its finalists on
the whole validation split. The slots survivors then train until the
deadline, with a learning-rate schedule planned for the units they will get
(planned again after every unit past the cut, from their pace so far and
the time left), and score the whole split every few units (full_every) and
at their end. The configurations that are pruned take at most PRUNED_SHARE of the
budget. Pure functions on numbers: search.scheduler applies a plan to Ray
Tune's trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from nucjax.config import Validation

#: The most of the planned slot-seconds the pruned configurations may take (their units, validations and
#: starts); the survivors get the rest and the PLANNED_SHARE reserve their re-plans use: about 60% of what runs.
PRUNED_SHARE = 0.45
#: The share of the budget planned for: the rest absorbs what the probe cannot see (the driver and
#: its reports share the CPUs) and its noise: on this 2-core machine, three 8-minute searches ran
#: their units 22% and 33% slower and 23% faster than planned.
PLANNED_SHARE = 0.85


#: The share of a survivor's time left that its re-plan (HalvingTrial.survivor) keeps in hand.
SURVIVOR_MARGIN = 0.05

#: The share of a survivor's time its whole-split validations may take (they come every full_every units).
#: Only a validated checkpoint can be chosen, and on held-out experiments a run peaks after 500-750 steps
#: and falls 0.02-0.03 within the next 300 (docs/benchmarks.md): at 0.15 the 60-minute real search validated
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
    (and at their first or the last cut, and at their last) instead of the subset's; cut_whole: the last pruning rung
    ranks its finalists on the whole split (at its milestone, which is then the survivors' first)."""

    rungs: tuple[Rung, ...]
    unit_steps: int
    unit_seconds: float
    start_seconds: float
    slots: int
    eta: int
    subset_seconds: float = 0.0
    full_seconds: float = 0.0
    full_every: int = 1
    cut_whole: bool = False

    @property
    def total_units(self) -> int:
        """The units a survivor trains, what every configuration's schedule is planned for."""
        return self.rungs[-1].units

    @property
    def survivor_unit_seconds(self) -> float:
        """A survivor's unit: training and the report, and its share of the whole-split validations."""
        return self.unit_seconds - self.subset_seconds + self.full_seconds / self.full_every

    @property
    def subset_until(self) -> int:
        """The last unit scored on the subset: the whole split from the last cut's milestone, or after it."""
        return self.rungs[-2].units - self.cut_whole

    def rung_of(self, units: int) -> int:
        """The rung a configuration that has trained `units` units is in (its last milestone reached)."""
        return next(i for i, rung in enumerate(self.rungs) if units <= rung.units)

    def config_seconds(self) -> list[float]:
        """The planned slot-seconds of one configuration in each rung: its new units, its (re)start and
        the first whole-split validation, at the last cut or as a survivor."""
        before, last = 0, len(self.rungs) - 1
        spent = []
        for i, rung in enumerate(self.rungs):
            unit = self.survivor_unit_seconds if i == last and i > 0 else self.unit_seconds
            first_whole = (i == last - 1 and self.cut_whole) or (i == last and i > 0 and not self.cut_whole)
            extra = self.full_seconds - self.subset_seconds * (i < last) if first_whole else 0.0
            spent.append((rung.units - before) * unit + self.start_seconds + extra)
            before = rung.units
        return spent

    def slot_seconds(self) -> list[float]:
        """The planned slot-seconds of each rung: its configurations' config_seconds."""
        return [rung.configs * seconds for rung, seconds in zip(self.rungs, self.config_seconds())]

    def pruned_seconds(self) -> float:
        """The planned slot-seconds of the configurations pruned: all they trained until their cut."""
        per_config, pruned = self.config_seconds(), 0.0
        for i in range(len(self.rungs) - 1):
            pruned += (self.rungs[i].configs - self.rungs[i + 1].configs) * sum(per_config[:i + 1])
        return pruned

    def describe(self) -> str:
        parts = [f"{r.configs} configuration{'s' * (r.configs != 1)} to {r.units * self.unit_steps} steps" for r in self.rungs]
        cut = "; the last cut on the whole split" if self.cut_whole else ""
        return (f"successive halving (eta {self.eta}, {self.slots} slots, {self.unit_steps}-step units of "
                f"~{self.unit_seconds:.0f} s; survivors validated whole every {self.full_every} units, "
                f"~{self.full_seconds:.0f} s{cut}): " + "; ".join(parts))


def _pruning_rungs(first_configs: int, slots: int, eta: int, first_units: int, settle_units: int = 0) -> list[Rung]:
    """The pruning rungs when first_configs start, the first rung `first_units`
    units long: each keeps the best 1/eta, rounded up to whole slots (a slot
    left idle while the rung finishes would train nothing), the last
    training at least settle_units."""
    rungs, configs, units = [], first_configs, first_units
    while configs > slots:
        rungs.append(Rung(configs, units))
        configs, units = slots * math.ceil(configs / (eta * slots)), units * eta
    if rungs and rungs[-1].units < settle_units:
        rungs[-1] = Rung(rungs[-1].configs, settle_units)
    return rungs


def full_every(full_s: float, train_s: float) -> int:
    """How many units apart a survivor validates the whole split, so the
    validations take about FULL_VALIDATION_SHARE of its time."""
    return max(1, math.ceil(full_s / (FULL_VALIDATION_SHARE * max(train_s, 1e-9))))


def plan_halving(budget_s: float, slots: int, unit_steps: int, unit_s: float, start_s: float, eta: int = 3,
                 max_rounds: int = 6, spent_s: float = 0.0, first_units: int = 1, subset_s: float = 0.0,
                 full_s: float = 0.0, settle_units: int = 0, most_configs: int | None = None) -> HalvingPlan:
    """The plan for the budget left (seconds), `slots` trials at a time,
    units of unit_steps steps taking unit_s seconds each (training, the
    subset validation of subset_s seconds and the report) and start_s
    seconds to (re)start a trial; full_s: one whole-split validation.
    The most configurations start whose pruned work fits PRUNED_SHARE of
    the planned slot-seconds and whose survivors still train at least
    twice as long as the last cut. first_units: how long the first rung
    trains (enough steps to be past the learning-rate warm-up, or every
    score there is noise); settle_units: how long the last cut waits (its
    finalists ranked on the whole split, when given), until the learning
    curves have stopped crossing. most_configs: how many distinct
    configurations the space can draw (at least slots * eta start, repeats
    where it has fewer). PlanError when not even slots * eta
    configurations fit, naming the smallest whole budget that works, with
    the spent_s already gone (the probe)."""
    if slots < 1 or eta < 2 or unit_s <= 0 or unit_steps < 1:
        raise ValueError("slots must be >= 1, eta >= 2, unit_steps >= 1 and unit_s > 0")
    every = full_every(full_s, unit_s - subset_s) if full_s else 1
    cut_whole = settle_units > 0 and full_s > 0
    most = slots * eta**max_rounds if most_configs is None else max(slots * eta, min(most_configs, slots * eta**max_rounds))
    most -= most % slots

    def fitting(budget: float) -> HalvingPlan | None:
        slot_seconds = budget * slots * PLANNED_SHARE
        for first_configs in range(most, slots * eta - 1, -slots):
            pruning = _pruning_rungs(first_configs, slots, eta, first_units, settle_units)
            cut = pruning[-1].units
            plan = HalvingPlan(tuple(pruning + [Rung(slots, cut)]), unit_steps, unit_s, start_s, slots, eta, subset_s,
                               full_s, every, cut_whole)
            if plan.pruned_seconds() > PRUNED_SHARE * slot_seconds:
                continue
            left = slot_seconds - sum(plan.slot_seconds()[:-1])
            survivors = cut + int((left / slots - plan.config_seconds()[-1]) // plan.survivor_unit_seconds)
            if survivors >= 2 * cut:
                return dataclasses.replace(plan, rungs=plan.rungs[:-1] + (Rung(slots, survivors),))
        return None

    plan = fitting(budget_s)
    if plan is not None:
        return plan
    # The smallest whole budget in minutes that fits (more budget never fits fewer rungs).
    low, high = math.floor((budget_s + spent_s) / 60), max(2, math.ceil((budget_s + spent_s) / 60))
    while fitting(high * 60 - spent_s) is None:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fitting(middle * 60 - spent_s) is not None else (middle, high)
    raise PlanError(f"a budget of {(budget_s + spent_s) / 60:.1f} minutes is too small for successive halving with "
                    f"{slots} slot{'s' * (slots != 1)} ({unit_steps}-step units of ~{unit_s:.0f} s, trials starting in "
                    f"~{start_s:.0f} s); the smallest that works is {high} minutes")


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
    after it, the whole split as prediction scores it: at the first unit
    past subset_until (the last cut's milestone, or a survivor's first
    unit), every full_every units and at the last (total_units). cut_units:
    the last cut's milestone; a survivor re-plans its units after every
    unit past it. deadline: the wall-clock time (time.time()) by which a
    trial stops training and validates what it has."""

    subset: tuple[int, ...]
    subset_until: int
    full_every: int = 1
    total_units: int = 0
    deadline: float | None = None
    full_seconds: float = 0.0
    cut_units: int | None = None
    unit_cost: float = 0.0

    @classmethod
    def of(cls, plan: HalvingPlan, subset, deadline: float | None = None,
           unit_cost: float = 0.0) -> "HalvingTrial":
        """A plan's trials: the subset until its last pruning rung (or its milestone), then its survivors' cadence.
        unit_cost: the work of the plan's unit for the configuration it was timed on (0: units of
        unit_steps steps for every configuration)."""
        return cls(tuple(subset), plan.subset_until, plan.full_every, plan.total_units, deadline, plan.full_seconds,
                   plan.rungs[-2].units, unit_cost)

    def unit_steps(self, step_cost: float, plan_steps: int) -> int:
        """The steps of this trial's unit when one of its steps does step_cost
        (search.trainable.step_cost): the plan's unit of work, so every
        configuration trains for about the same time between milestones and the rungs compare
        them at equal core-seconds, not equal steps (a wider model is not pruned for being
        slower, nor favoured for seeing more). plan_steps when the work is not known."""
        if not self.unit_cost or step_cost <= 0:
            return plan_steps
        return max(1, round(self.unit_cost / step_cost))

    @property
    def replans_at(self) -> int:
        """The first unit after which a survivor plans its units anew (it does after every unit from there)."""
        return (self.subset_until if self.cut_units is None else self.cut_units) + 1

    def _whole(self, epoch: int, last: int) -> bool:
        since = epoch - self.subset_until
        return since >= 1 and (since == 1 or since % self.full_every == 0 or epoch >= last)

    def survivor(self, done: int, unit_s: float, now: float, full_s: float | None = None) -> "HalvingTrial":
        """This trial as a survivor that has trained `done` units, a unit
        taking unit_s seconds (its pace on the machine as it is now, not the
        probe's: see SurvivorPace) and a whole-split validation full_s (the
        plan's when None), planned anew to end at the deadline: the most
        units that fit with the whole-split validations they will run (the
        unit just trained's, if due, every full_every-th, the last). The
        plan's units were planned for PLANNED_SHARE of the budget from the
        probe's timing; here the time left is known. SURVIVOR_MARGIN keeps
        a slower unit inside the deadline."""
        if self.deadline is None:
            return self
        left = (self.deadline - now) * (1 - SURVIVOR_MARGIN)
        full_s = self.full_seconds if full_s is None else full_s

        def cost(units: int) -> float:
            last = done + units
            return units * unit_s + sum(self._whole(epoch, last) for epoch in range(done, last + 1)) * full_s

        units = 0  # none fit: the unit just trained is the last, validated now rather than cut by the deadline
        while cost(units + 1) <= left:
            units += 1
        return dataclasses.replace(self, total_units=done + units)

    def validate_on(self, epoch: int, images: int) -> Validation:
        if epoch <= self.subset_until:
            return Validation(tuple(self.subset), at_true_scale=True)
        return Validation(tuple(range(images)) if self._whole(epoch, self.total_units) else ())


@dataclass
class SurvivorPace:
    """A survivor's pace as its process measures it, for its re-plans after
    every unit (HalvingTrial.survivor). The first unit it sees is timed by
    its compiled steps alone; from then on a unit's seconds are the wall
    clock since that unit, less the validations in between: saving,
    reporting and the other trials' load on the CPUs count. One unit timed
    once was not enough: timed on the unit after their restart at the cut,
    slower than those that followed, the survivors of a 60-minute search
    ended 5-6 minutes before the deadline."""

    since: tuple[int, float] | None = None  # (units done, time.time()) when the timing began
    validating: float = 0.0  # validation seconds since then
    whole: list[float] = dataclasses.field(default_factory=list)  # each whole-split validation's seconds

    def unit_seconds(self, done: int, steps_seconds: float, now: float) -> float:
        """Seconds a unit takes, at `now`, when `done` units have trained (the last, once compiled, in steps_seconds)."""
        if self.since is None or done <= self.since[0]:
            self.since, self.validating = (done, now), 0.0
            return steps_seconds
        first, then = self.since
        return max(now - then - self.validating, 0.0) / (done - first) or steps_seconds

    def validated(self, epoch: int, seconds: float, whole: bool) -> None:
        """Unit `epoch` was validated in `seconds` (the whole split, or a subset)."""
        if self.since is not None and epoch >= self.since[0]:
            self.validating += seconds
        if whole:
            self.whole.append(seconds)

    def full_seconds(self) -> float | None:
        """A whole-split validation's seconds as measured here (their mean), or None before the first."""
        return sum(self.whole) / len(self.whole) if self.whole else None


def rank_correlation(first: list[float], later: list[float]) -> float | None:
    """Spearman's rank correlation of two scorings of the same configurations
    (ties take their mean rank); None for fewer than three or no spread."""
    if len(first) != len(later):
        raise ValueError("rank_correlation needs two scorings of the same configurations")
    if len(first) < 3:
        return None
    ranks = [_ranks(first), _ranks(later)]
    means = [sum(r) / len(r) for r in ranks]
    deviations = [[v - m for v in r] for r, m in zip(ranks, means)]
    spread = math.sqrt(sum(d * d for d in deviations[0]) * sum(d * d for d in deviations[1]))
    return sum(a * b for a, b in zip(*deviations)) / spread if spread else None


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def first_rung_correlation(record: dict) -> tuple[float | None, int]:
    """(Spearman correlation, configurations) between the first rung's ranking
    of a halving record and its last cut's, over the configurations that
    reached the last cut: whether the first rung ranks or guesses (1: the
    first rung foresaw the cut; 0: a lottery). None where fewer than three
    were scored at both."""
    last_cut = str(len(record["plan"]["rungs"]) - 2)
    first, cut = record["scores"].get("0", {}), record["scores"].get(last_cut, {})
    both = [t for t in cut if t in first]
    if last_cut == "0" or len(both) < 3:
        return None, len(both)
    return rank_correlation([first[t][0] for t in both], [cut[t][0] for t in both]), len(both)


def plan_record(plan: HalvingPlan) -> dict:
    return {"rungs": [[r.configs, r.units] for r in plan.rungs], "unit_steps": plan.unit_steps,
            "unit_seconds": plan.unit_seconds, "start_seconds": plan.start_seconds, "slots": plan.slots, "eta": plan.eta,
            "subset_seconds": plan.subset_seconds, "full_seconds": plan.full_seconds, "full_every": plan.full_every,
            "cut_whole": plan.cut_whole}


def read_plan(record: dict) -> HalvingPlan:
    return HalvingPlan(tuple(Rung(*r) for r in record["rungs"]), record["unit_steps"], record["unit_seconds"],
                       record["start_seconds"], record["slots"], record["eta"], record.get("subset_seconds", 0.0),
                       record.get("full_seconds", 0.0), record.get("full_every", 1), record.get("cut_whole", False))


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
