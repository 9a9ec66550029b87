"""Successive halving planned from the time budget: how many configurations
start, how far each rung trains them, and who goes on.

A search's trials report every `unit` steps (a fraction of an epoch). The
plan starts slots * eta**R configurations for one unit; after each rung the
best 1/eta of them (by validation on a small fixed subset of images) go
on, from their checkpoints, to eta times as many units; the last rung's
slots survivors train until the deadline, with a learning-rate schedule
planned for the units they will get. R is the most rounds whose pruning
costs at most PRUNING_SHARE of the budget. Pure functions on numbers:
search.scheduler applies a plan to Ray Tune's trials.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

#: The most of the budget the pruning rungs may take; the rest is the survivors'.
PRUNING_SHARE = 0.4
#: The share of the budget planned for: the rest absorbs what the probe cannot see (the driver and
#: its reports share the CPUs) and its noise: on this 2-core machine, three 8-minute searches ran
#: their units 22% and 33% slower and 23% faster than planned.
PLANNED_SHARE = 0.85


#: Where the scheduler records each trial's rung and fate, in the experiment folder.
HALVING_FILE = "halving.json"


class PlanError(ValueError):
    """A budget too small for one round of halving; the message names the smallest that works."""


@dataclass(frozen=True)
class Rung:
    """configs enter the rung; each leaves it having trained `units` units in all."""

    configs: int
    units: int


@dataclass(frozen=True)
class HalvingPlan:
    """Rungs in order; the last is the survivors' (slots configurations to the deadline)."""

    rungs: tuple[Rung, ...]
    unit_steps: int
    unit_seconds: float
    start_seconds: float
    slots: int
    eta: int

    @property
    def total_units(self) -> int:
        """The units a survivor trains, what every configuration's schedule is planned for."""
        return self.rungs[-1].units

    def rung_of(self, units: int) -> int:
        """The rung a configuration that has trained `units` units is in (its last milestone reached)."""
        return next(i for i, rung in enumerate(self.rungs) if units <= rung.units)

    def slot_seconds(self) -> list[float]:
        """The planned slot-seconds of each rung: its configurations' new units and their (re)starts."""
        before = 0
        spent = []
        for rung in self.rungs:
            spent.append(rung.configs * ((rung.units - before) * self.unit_seconds + self.start_seconds))
            before = rung.units
        return spent

    def describe(self) -> str:
        parts = [f"{r.configs} configuration{'s' * (r.configs != 1)} to {r.units * self.unit_steps} steps" for r in self.rungs]
        return (f"successive halving (eta {self.eta}, {self.slots} slots, {self.unit_steps}-step units of "
                f"~{self.unit_seconds:.0f} s): " + "; ".join(parts))


def _pruning_rungs(rounds: int, slots: int, eta: int, first: int) -> list[Rung]:
    """The pruning rungs of a plan with `rounds` halvings, the first `first` units long."""
    return [Rung(slots * eta ** (rounds - r), first * eta**r) for r in range(rounds)]


def plan_halving(budget_s: float, slots: int, unit_steps: int, unit_s: float, start_s: float, eta: int = 3,
                 max_rounds: int = 6, spent_s: float = 0.0, first_units: int = 1) -> HalvingPlan:
    """The plan for the budget left (seconds), `slots` trials at a time,
    units of unit_steps steps taking unit_s seconds each (training and the
    subset validation) and start_s seconds to (re)start a trial. PlanError
    when not even one round fits (survivors must get at least eta times
    the units of the last pruning rung), naming the smallest whole budget,
    with the spent_s already gone (the probe). first_units: how long the
    first rung trains (enough steps to be past the learning-rate warm-up,
    or every score there is noise)."""
    if slots < 1 or eta < 2 or unit_s <= 0 or unit_steps < 1:
        raise ValueError("slots must be >= 1, eta >= 2, unit_steps >= 1 and unit_s > 0")
    slot_seconds = budget_s * slots * PLANNED_SHARE

    def plan(rungs: list[Rung]) -> HalvingPlan:
        return HalvingPlan(tuple(rungs), unit_steps, unit_s, start_s, slots, eta)

    for rounds in range(max_rounds, 0, -1):
        pruning = _pruning_rungs(rounds, slots, eta, first_units)
        cost = sum(plan(pruning).slot_seconds())
        survivors = pruning[-1].units + int(((slot_seconds - cost) / slots - start_s) // unit_s)
        if cost <= PRUNING_SHARE * slot_seconds and survivors >= first_units * eta**rounds:
            return plan(pruning + [Rung(slots, survivors)])
    one_round = sum(plan(_pruning_rungs(1, slots, eta, first_units)).slot_seconds())
    needed = (one_round + slots * (start_s + (eta - 1) * first_units * unit_s)) / (slots * PLANNED_SHARE)
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
    validation subset its pruning rungs score on, and the last unit scored
    on it (later units, the survivors', score the whole split)."""

    subset: tuple[int, ...]
    subset_until: int

    def validate_on(self, epoch: int, images: int):
        return self.subset if epoch <= self.subset_until else range(images)


def plan_record(plan: HalvingPlan) -> dict:
    return {"rungs": [[r.configs, r.units] for r in plan.rungs], "unit_steps": plan.unit_steps,
            "unit_seconds": plan.unit_seconds, "start_seconds": plan.start_seconds, "slots": plan.slots, "eta": plan.eta}


def read_plan(record: dict) -> HalvingPlan:
    return HalvingPlan(tuple(Rung(*r) for r in record["rungs"]), record["unit_steps"], record["unit_seconds"],
                       record["start_seconds"], record["slots"], record["eta"])


def read_halving(folder) -> dict | None:
    """The halving record (search.scheduler) of an experiment folder, or None."""
    path = Path(folder) / HALVING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


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
