"""Successive halving planned from the time budget (search.halving): the
rung plan, its refusal of a budget too small, the fixed validation subset,
and the record the scheduler keeps. The scheduler on a Ray cluster, pausing
and resuming trials, is in test_search_recovery.py."""

from __future__ import annotations

import dataclasses

import pytest

from nucjax.config import Validation
from search.halving import (
    FULL_VALIDATION_SHARE,
    PLANNED_SHARE,
    PRUNED_SHARE,
    HalvingPlan,
    HalvingTrial,
    PlanError,
    Rung,
    SurvivorPace,
    fates,
    plan_halving,
    plan_record,
    read_plan,
    rung_counts,
    validation_subset,
)


def test_an_hour_on_two_slots_tries_many_and_spends_most_on_the_survivors():
    # Real-data figures: 37-step units of ~50 s with their subset validation, ~20 s to (re)start a trial.
    plan = plan_halving(3600, 2, 37, 50.0, 20.0)
    assert [(r.configs, r.units) for r in plan.rungs[:-1]] == [(20, 1), (8, 3), (4, 9)]
    survivors = plan.rungs[-1]
    assert survivors.configs == 2 and survivors.units >= 2 * plan.rungs[-2].units
    spent = plan.slot_seconds()
    assert sum(spent) <= 3600 * 2 * PLANNED_SHARE
    assert plan.pruned_seconds() <= PRUNED_SHARE * 3600 * 2 * PLANNED_SHARE
    assert 1 - plan.pruned_seconds() / sum(spent) > 0.55  # the survivors' whole trials, before the reserve
    assert plan.total_units == survivors.units and plan.rung_of(1) == 0 and plan.rung_of(2) == 1
    assert read_plan(plan_record(plan)) == plan


def test_the_last_cut_waits_for_the_learning_curves_and_ranks_on_the_whole_split():
    # This machine's real-data figures (the 60-minute searches' probes): 37-step units of ~75 s with the
    # subset's 10 s, 24 s to restart, 132 s for the whole split; the cut after 8 units (about 300 steps).
    plan = plan_halving(3470, 2, 37, 75.0, 24.0, subset_s=10.0, full_s=132.0, settle_units=8)
    assert [(r.configs, r.units) for r in plan.rungs[:-1]] == [(12, 1), (4, 8)] and plan.cut_whole
    assert plan.rungs[-1].units >= 16 and plan.pruned_seconds() <= PRUNED_SHARE * 3470 * 2 * PLANNED_SHARE
    assert read_plan(plan_record(plan)) == plan
    trial = HalvingTrial.of(plan, [0, 3, 5])
    subset, whole = Validation((0, 3, 5), at_true_scale=True), Validation(tuple(range(50)))
    assert [trial.validate_on(u, 50) for u in (1, 7)] == [subset, subset]
    assert trial.validate_on(8, 50) == whole  # the finalists, ranked as prediction scores
    assert trial.replans_at == 9  # a survivor's first unit after the cut, not the cut (it may wait there)
    # The whole split costs each finalist at the cut what it costs a survivor at its first unit otherwise.
    geometric = plan_halving(3470, 2, 37, 75.0, 24.0, subset_s=10.0, full_s=132.0)
    assert not geometric.cut_whole and geometric.rungs[-2].units == 3
    assert plan.config_seconds()[1] == pytest.approx(7 * 75.0 + 24.0 + 132.0 - 10.0)
    assert geometric.config_seconds()[-1] == pytest.approx(
        (geometric.total_units - 3) * geometric.survivor_unit_seconds + 24.0 + 132.0)


def test_rungs_keep_whole_slots_so_none_idles_while_a_rung_finishes():
    for plan in (plan_halving(3600, 2, 37, 50.0, 20.0), plan_halving(3600, 8, 37, 50.0, 20.0),
                 plan_halving(3470, 2, 37, 75.0, 24.0, subset_s=10.0, full_s=132.0, settle_units=8)):
        assert all(rung.configs % plan.slots == 0 for rung in plan.rungs)


def test_a_slower_unit_or_more_slots_change_the_plan_as_they_should():
    fast, slow = plan_halving(3600, 2, 37, 50.0, 20.0), plan_halving(3600, 2, 37, 200.0, 20.0)
    assert slow.rungs[0].configs < fast.rungs[0].configs
    wide = plan_halving(3600, 8, 37, 50.0, 20.0)
    assert wide.rungs[-1].configs == 8 and wide.rungs[0].configs >= 4 * fast.rungs[0].configs / 2


def test_a_budget_too_small_is_refused_naming_the_smallest_that_works():
    with pytest.raises(PlanError) as refused:
        plan_halving(120, 2, 25, 20.0, 10.0, spent_s=30)
    message = str(refused.value)
    assert "2.5 minutes is too small" in message
    minutes = int(message.split("the smallest that works is ")[1].split()[0])
    plan = plan_halving(minutes * 60 - 30, 2, 25, 20.0, 10.0, spent_s=30)  # that budget, less what was spent, works
    assert len(plan.rungs) >= 2
    with pytest.raises(PlanError):
        plan_halving((minutes - 1) * 60 - 30, 2, 25, 20.0, 10.0, spent_s=30)


def test_the_first_rung_can_train_past_the_warm_up():
    plan = plan_halving(3600, 2, 20, 20.0, 10.0, first_units=3)
    assert [r.units for r in plan.rungs[:-1]] == [3 * 3**r for r in range(len(plan.rungs) - 1)]


def test_the_validation_subset_is_fixed_keeps_the_film_images_first_and_covers_every_group():
    groups = ["a"] * 10 + ["b"] * 3 + ["c"] * 1 + ["a"] * 5
    subset = validation_subset(groups, 8, first=2)
    assert subset == validation_subset(groups, 8, first=2)
    assert subset[:2] == (0, 1) and len(subset) == 8 and len(set(subset)) == 8
    assert {groups[i] for i in subset} == {"a", "b", "c"}
    assert sorted(validation_subset(groups, 100)) == list(range(len(groups)))  # a small split is validated whole


def test_the_record_gives_each_trial_its_fate_and_each_rung_its_counts():
    plan = plan_halving(3470, 2, 37, 75.0, 24.0, subset_s=10.0, full_s=132.0, settle_units=8)
    record = {"plan": plan_record(plan), "rung": {"t1": 2, "t2": 2, "t3": 1, "t4": 0, "t5": 0},
              "fate": {"t3": "pruned at rung 1", "t4": "pruned at rung 0", "t5": "error"}}
    assert fates(record) == {"t1": "survivor", "t2": "survivor", "t3": "pruned at rung 1",
                             "t4": "pruned at rung 0", "t5": "error"}
    assert rung_counts(record) == [(5, 3, 37), (3, 2, 296), (2, 0, plan.rungs[-1].units * 37)]


def test_the_first_rung_takes_as_many_configurations_as_the_pruned_share_affords():
    # About this machine's real-data figures after a 3.5-minute probe: not only 6 or 18 (slots * 3**R).
    plan = plan_halving(56.5 * 60, 2, 37, 84.0, 51.0, subset_s=20.0, full_s=84.0)
    assert [(r.configs, r.units) for r in plan.rungs[:-1]] == [(14, 1), (6, 3)]
    slot_seconds = 56.5 * 60 * 2 * PLANNED_SHARE
    assert plan.pruned_seconds() <= PRUNED_SHARE * slot_seconds
    wider = HalvingPlan((Rung(16, 1), Rung(6, 3), plan.rungs[-1]), *dataclasses.astuple(plan)[1:])
    assert wider.pruned_seconds() > PRUNED_SHARE * slot_seconds  # two more would not fit
    # Each rung keeps the best third, rounded up to whole slots, never fewer than the slots.
    assert [r.configs for r in plan_halving(3600, 2, 37, 30.0, 10.0).rungs] == [36, 12, 4, 2]


def test_survivors_validate_the_whole_split_every_few_units_within_their_share():
    plan = plan_halving(3600, 2, 37, 50.0, 20.0, subset_s=8.0, full_s=100.0)
    train_s = plan.unit_seconds - plan.subset_seconds
    assert plan.full_every == 10 and plan.full_seconds / plan.full_every <= FULL_VALIDATION_SHARE * train_s
    assert plan.full_seconds / (plan.full_every - 1) > FULL_VALIDATION_SHARE * train_s  # as often as the share allows
    assert plan.survivor_unit_seconds == pytest.approx(train_s + 100.0 / 10)
    trial = HalvingTrial.of(plan, [0, 3, 5], deadline=123.0)
    assert (trial.subset_until, trial.full_every, trial.total_units) == (plan.rungs[-2].units, 10, plan.total_units)
    assert trial.validate_on(plan.total_units, 50) == Validation(tuple(range(50)))
    # Costed: dearer whole-split validation leaves the survivors fewer units.
    assert plan_halving(3600, 2, 37, 50.0, 20.0, subset_s=8.0, full_s=400.0).total_units < plan.total_units


def test_a_trial_scores_its_rungs_on_the_subset_and_as_a_survivor_the_whole_split_now_and_then():
    trial = HalvingTrial(subset=(0, 3, 5), subset_until=9, full_every=4, total_units=20)
    assert trial.validate_on(1, 50) == trial.validate_on(9, 50) == Validation((0, 3, 5), at_true_scale=True)
    whole = Validation(tuple(range(50)))
    assert [u for u in range(10, 21) if trial.validate_on(u, 50) == whole] == [10, 13, 17, 20]
    assert all(trial.validate_on(u, 50) == Validation(()) for u in (11, 12, 14, 18, 19))


def test_a_trials_checkpoint_is_chosen_as_a_run_chooses_among_its_whole_split_ones(tiny_run):
    """search.tuner.chosen_checkpoint: nucjax.train's noise rule over what the trial kept, leaving out
    checkpoints scored on a subset (a halving search's pruning rungs)."""
    from types import SimpleNamespace

    from nucjax.checkpoints import choose_checkpoint, list_checkpoints
    from search.tuner import chosen_checkpoint

    found = list_checkpoints(tiny_run)
    whole = found[-1].metrics["images"]
    kept = [(SimpleNamespace(path=str(info.path)), {"validated_images": whole}) for info in found]
    assert chosen_checkpoint(SimpleNamespace(best_checkpoints=kept), whole).path == choose_checkpoint(found).path
    subset_latest = kept[:-1] + [(kept[-1][0], {"validated_images": whole - 1})]
    assert chosen_checkpoint(SimpleNamespace(best_checkpoints=subset_latest), whole).path == found[0].path
    assert chosen_checkpoint(SimpleNamespace(best_checkpoints=[]), whole) is None


def test_a_probe_times_steps_and_validations_apart_from_compilation(tiny_samples):
    """What the plan is made from (search.trainable.probe_trial, here in this process): a step, the
    subset at the masks' scale and as prediction validates it, and a start that holds the compilation
    (a trial pays it once), of which 'restart' leaves out what the shared cache saves the trials after it.
    The compilation clock counts a new program and not a call of a compiled one; its 'saved' part counts
    XLA compiling a program, and not the cache's read of it."""
    import time

    import jax
    import jax.numpy as jnp

    from search.tuner import sampled_params
    from search.spaces import search_space
    from search.trainable import compile_seconds, probe_trial

    params = {**sampled_params(search_space("extended", smoke=True), 0), "seed": 0, "warmup_steps": 1}
    train, val = tiny_samples[:6], tiny_samples[6:]
    timed = probe_trial(params, train, val, [0, 1], 3)
    assert all(timed[key] > 0 for key in ("step", "subset", "predicted_subset", "start", "compile", "step_cost"))
    assert timed["start"] >= timed["compile"] and timed["seconds"] > timed["start"] + 6 * timed["step"]
    assert timed["start"] - timed["compile"] <= timed["restart"] <= timed["start"]
    # Whether the probe compiled or read the shared cache depends on what ran before: time a program apart,
    # one no cache holds yet (its constant is new).
    before, saved_before = compile_seconds(), compile_seconds("saved")
    new_constant = float(time.time_ns() % 1_000_003)
    program = jax.jit(lambda x: jnp.sin(x) * new_constant + jnp.arange(7.0))
    program(jnp.ones(7)).block_until_ready()
    compiled, saved = compile_seconds(), compile_seconds("saved")
    program(jnp.ones(7)).block_until_ready()
    assert compiled > before and compile_seconds() == compiled
    assert 0 < saved - saved_before <= compiled - before
    # Made again in this process, it is read from the persistent cache: it costs the clock, it saves nothing.
    jax.clear_caches()
    program(jnp.ones(7)).block_until_ready()
    assert compile_seconds() > compiled and compile_seconds("saved") - saved < saved - saved_before


def test_a_survivor_plans_its_units_to_end_at_the_deadline_at_its_own_pace():
    trial = HalvingTrial((0, 3, 5), subset_until=3, full_every=10, total_units=20, deadline=10_000.0, full_seconds=100.0,
                         cut_units=3)
    # At its first unit past the cut (4), 1900 s of the 2000 left (the margin): 35 units of 40 s and 5 whole
    # validations of 100 s (the unit just trained, 13, 23 and 33 on the 10-unit cadence from the subset's end
    # at 3, and 39, the last): 1900 s. 36 units: 1940 s.
    assert trial.replans_at == 4
    survivor = trial.survivor(4, 40.0, now=8_000.0)
    assert survivor.total_units == 4 + 35 and survivor.subset_until == trial.subset_until
    # After a cut on the whole split (at 4, so the subset ends at 3 and the survivor re-plans at 5): its first
    # unit is off the cadence, so it pays one validation less: 2 more units of 40 s.
    after_cut = dataclasses.replace(trial, cut_units=4)
    assert after_cut.replans_at == 5 and after_cut.survivor(5, 40.0, now=8_000.0).total_units == 5 + 37
    assert trial.survivor(4, 80.0, now=8_000.0).total_units < survivor.total_units  # a slower machine: fewer units
    # Validations measured at 50 s, not the plan's 100: 40 units and 6 validations fill the 1900 s.
    assert trial.survivor(4, 40.0, now=8_000.0, full_s=50.0).total_units == 4 + 40
    assert trial.survivor(4, 40.0, now=9_990.0).total_units == 4  # none fits: the unit just trained is the last
    assert HalvingTrial((0,), 3).survivor(3, 40.0, now=0.0).total_units == 0  # no deadline: the plan stands


def test_a_survivors_pace_is_its_wall_clock_less_its_validations():
    pace = SurvivorPace()
    pace.validated(8, 118.0, whole=True)  # the last cut's validation, before the survivor's timing began
    assert pace.unit_seconds(9, 70.0, now=1_000.0) == 70.0  # the first unit seen: its compiled steps' time
    assert pace.full_seconds() == 118.0
    # Units 10-13 end at 1060, 1120, 1180, 1240; 13 validates the whole split in 50 s; 14 ends at 1350.
    assert pace.unit_seconds(13, 58.0, now=1_240.0) == 60.0
    pace.validated(13, 50.0, whole=True)
    assert pace.unit_seconds(14, 58.0, now=1_350.0) == 60.0  # saving and reporting count, validating does not
    assert pace.full_seconds() == 84.0
    pace.validated(14, 4.0, whole=False)  # a subset's validation: not a whole split's, but not a unit's time either
    assert pace.unit_seconds(15, 58.0, now=1_414.0) == 60.0 and pace.full_seconds() == 84.0


def _survive(trial: HalvingTrial, first_unit_s: float, unit_s: float, full_s: float, now: float, replan_every_unit: bool):
    """A survivor's units from its first past the cut: the first taking first_unit_s, the rest unit_s, each
    whole-split validation full_s; re-planned once (at the first) or after every unit. When it ends, and at what unit."""
    pace, epoch = SurvivorPace(), trial.replans_at
    now += first_unit_s
    while True:
        if replan_every_unit or epoch == trial.replans_at:
            trial = trial.survivor(epoch, pace.unit_seconds(epoch, first_unit_s if epoch == trial.replans_at else unit_s,
                                                            now), now, pace.full_seconds())
        if trial.validate_on(epoch, 100).images:
            now += full_s
            pace.validated(epoch, full_s, whole=True)
        if epoch >= trial.total_units:
            return now, epoch
        epoch, now = epoch + 1, now + unit_s


def test_a_survivor_re_planned_after_every_unit_ends_close_to_the_deadline():
    """The 60-minute real search's survivors: timed on the unit after their restart at the cut (90 s; the
    units after it took 60), planned once they ended 5-6 minutes early. Re-planned after every unit from
    their pace so far, they end within a unit of the deadline, and never after it."""
    deadline = 1_000.0 + 1_600.0
    trial = HalvingTrial(tuple(range(16)), subset_until=7, full_every=6, total_units=23, deadline=deadline,
                         full_seconds=60.0, cut_units=8)
    once, once_units = _survive(trial, 90.0, 60.0, 50.0, 1_000.0, replan_every_unit=False)
    paced, paced_units = _survive(trial, 90.0, 60.0, 50.0, 1_000.0, replan_every_unit=True)
    assert deadline - once > 4 * 60.0  # four units and more left unused
    assert 0.0 <= deadline - paced < 60.0 + 50.0 and paced_units >= once_units + 4


def test_a_plan_starts_no_more_configurations_than_the_space_holds():
    assert [r.configs for r in plan_halving(3600, 2, 37, 30.0, 10.0).rungs] == [36, 12, 4, 2]
    capped = plan_halving(3600, 2, 37, 30.0, 10.0, most_configs=13)  # whole slots: 12
    assert [r.configs for r in capped.rungs] == [12, 4, 2]
    # The survivors get the time the configurations left out would have taken.
    assert capped.rungs[-1].units > plan_halving(3600, 2, 37, 30.0, 10.0).rungs[-1].units
    # Fewer than one halving needs (slots * eta): that many start, some twice.
    assert plan_halving(3600, 2, 37, 30.0, 10.0, most_configs=2).rungs[0].configs == 6
