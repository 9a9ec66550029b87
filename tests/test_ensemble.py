"""Ensembles: combining hand-made maps, test-time augmentation, choosing
members from an experiment, and python -m ensemble.predict end to end."""

import csv
import re
import json

import numpy as np
import pytest

from ensemble import predict
from nucjax.combine import COMBINATIONS, combine, quorum_for, rescaled
from ensemble.members import top_checkpoints, trial_checkpoints
from nucjax.experiment import ExperimentError, latest_experiment, read_experiment
from nucjax.data import load_dataset
from nucjax.inference import predict_image
from nucjax.inputs import InputConfig
from nucjax.submission import decode_submission, read_submission

# Three members' masks on a 1 x 4 strip: pixel 0 is claimed by all three,
# pixel 1 by two, pixel 2 by one, pixel 3 by none.
MASKS = [np.array([[1, 1, 1, 0]]), np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]])]


def maps_of(masks, body_on=0.9, body_off=0.1):
    return [np.where(m, body_on, body_off).astype(np.float32)[..., None] for m in masks]


def foreground(combined, threshold=0.5):
    return (combined[..., 0] > threshold).astype(int)


def test_intersect_keeps_what_every_member_claims():
    combined = combine(maps_of(MASKS), [0.5] * 3, "intersect")
    assert foreground(combined).tolist() == [[1, 0, 0, 0]]


def test_vote_keeps_what_a_majority_claims():
    assert foreground(combine(maps_of(MASKS), [0.5] * 3, "vote")).tolist() == [[1, 1, 0, 0]]


def test_mean_averages_the_maps():
    combined = combine(maps_of(MASKS), [0.5] * 3, "mean")
    np.testing.assert_allclose(combined[0, :, 0], [0.9, (0.9 * 2 + 0.1) / 3, (0.9 + 0.1 * 2) / 3, 0.1], rtol=1e-6)
    assert foreground(combined).tolist() == [[1, 1, 0, 0]]


@pytest.mark.parametrize("quorum, expected", [(1, [1, 1, 1, 0]), (2, [1, 1, 0, 0]), (3, [1, 0, 0, 0])])
def test_quorum_is_how_many_members_must_agree(quorum, expected):
    assert foreground(combine(maps_of(MASKS), [0.5] * 3, "intersect", quorum)).tolist() == [expected]


def test_a_quorum_outside_the_members_is_refused():
    with pytest.raises(ValueError, match="quorum"):
        quorum_for("intersect", 3, 4)
    assert quorum_for("vote", 4) == 3 and quorum_for("vote", 3) == 2


def test_each_member_is_thresholded_at_its_own_calibrated_threshold():
    # Member A is confident (threshold 0.6), member B timid (threshold 0.2):
    # 0.3 is foreground for B only, 0.7 for both.
    a = np.array([[0.7, 0.3]], np.float32)[..., None]
    b = np.array([[0.7, 0.3]], np.float32)[..., None]
    combined = combine([a, b], [0.6, 0.2], "intersect")
    assert foreground(combined).tolist() == [[1, 0]]
    assert foreground(combine([a, b], [0.6, 0.2], "intersect", 1)).tolist() == [[1, 1]]


def test_rescaling_moves_the_threshold_to_one_half_and_keeps_the_order():
    body = np.linspace(0, 1, 11, dtype=np.float32)[None, :, None]
    moved = rescaled(body, 0.3)[0, :, 0]
    assert moved[3] == pytest.approx(0.5) and moved[0] == 0 and moved[-1] == pytest.approx(1)
    assert np.all(np.diff(moved) > 0)


def test_the_border_channel_is_combined_on_the_interior():
    # Interior (1 - border) must hold for every member under intersect.
    a = np.stack([np.full((1, 2), 0.9), np.array([[0.1, 0.8]])], -1).astype(np.float32)
    b = np.stack([np.full((1, 2), 0.9), np.array([[0.2, 0.1]])], -1).astype(np.float32)
    combined = combine([a, b], [0.5, 0.5], "intersect")
    np.testing.assert_allclose(combined[0, :, 1], [0.2, 0.8])
    # A body-only member drops the border channel.
    assert combine([a, b[..., :1]], [0.5, 0.5], "mean").shape == (1, 2, 1)


def test_tta_of_a_model_that_commutes_with_the_symmetries_is_the_plain_map():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 1), dtype=np.uint8)  # not square: rotations change the shape

    def pointwise(x):
        return 1 / (1 + np.exp(-(x * 3 - 1)))

    config = InputConfig(size=32, mode="crop")
    plain = predict_image(pointwise, image, config, multiple=4)
    averaged = predict_image(pointwise, image, config, multiple=4, tta=True)
    np.testing.assert_allclose(averaged, plain, atol=1e-6)

    def left_heavy(x):  # not symmetric: TTA must change it
        ramp = np.linspace(1, 0, x.shape[2], dtype=np.float32)[None, None, :, None]
        return np.broadcast_to(ramp, x.shape).copy()

    assert not np.allclose(predict_image(left_heavy, image, config, 4, tta=True),
                           predict_image(left_heavy, image, config, 4))


def hand_made_member(name, score):
    from nucjax.config import ExperimentConfig
    from nucjax.postprocess import PostprocessConfig
    from nucjax.segmenter import Model

    config = ExperimentConfig(postprocess=PostprocessConfig(method="cc", threshold=0.5, min_size=1))
    return Model(name, None, config, score, forward=None)


def test_greedy_selection_keeps_a_member_only_when_it_helps():
    from ensemble.selection import EnsembleConfig, greedy_selection
    from nucjax.segmenter import LabelledMaps, Segmenter

    truth = np.zeros((12, 12), np.int32)
    truth[1:5, 1:5], truth[7:11, 7:11] = 1, 2
    first, second = truth == 1, truth == 2

    def body(on_first, on_second):
        return np.where(first, on_first, np.where(second, on_second, 0.05)).astype(np.float32)[..., None]

    a = body(0.95, 0.15)  # the best alone: finds the first nucleus only
    b = body(0.15, 0.9)  # finds the second: their mean finds both
    same_as_a = a.copy()  # adds nothing
    members = [hand_made_member("a", 0.6), hand_made_member("b", 0.4), hand_made_member("copy", 0.5)]
    candidates = Segmenter.of(members, ensemble=True)
    labelled = [LabelledMaps(np.zeros((12, 12, 3), np.uint8), truth, 1.0, [a, b, same_as_a])]
    chosen, config, scores, log = greedy_selection(candidates, labelled, "mean", EnsembleConfig(), members[0].config.postprocess)
    assert chosen == [0, 1] and scores == [1.0]
    assert [line.split(":")[0] for line in log] == ["a", "copy", "b"]
    assert "left out" in log[1] and "kept" in log[2]


def test_a_member_whose_gain_is_within_the_noise_is_left_out():
    from ensemble.selection import EnsembleConfig, greedy_selection
    from nucjax.segmenter import LabelledMaps, Segmenter

    first, second = np.zeros((12, 12), bool), np.zeros((12, 12), bool)
    first[1:5, 1:5], second[7:11, 7:11] = True, True

    def body(on_first, on_second):
        return np.where(first, on_first, np.where(second, on_second, 0.05)).astype(np.float32)[..., None]

    both = first.astype(np.int32) + 2 * second
    # b finds a nucleus a misses on three images (+0.5 each), and adds a false one on two (-0.5 each):
    # +0.1 on the mean, a gain five images cannot tell from luck.
    helps = LabelledMaps(np.zeros((12, 12, 3), np.uint8), both, 1.0, [body(0.95, 0.15), body(0.15, 0.9)])
    hurts = LabelledMaps(np.zeros((12, 12, 3), np.uint8), first.astype(np.int32), 1.0, [body(0.95, 0.05), body(0.95, 0.99)])
    members = [hand_made_member("a", 0.6), hand_made_member("b", 0.4)]
    candidates = Segmenter.of(members, ensemble=True)
    chosen, _, scores, log = greedy_selection(candidates, [helps] * 3 + [hurts] * 2, "mean", EnsembleConfig(),
                                              members[0].config.postprocess)
    assert chosen == [0] and scores == [0.5] * 3 + [1.0] * 2
    assert "b: 0.8000 with it, gain +0.1000" in log[1] and "left out" in log[1]


def fake_experiment(folder, trials):
    """An experiment folder as search.run writes it: trials is {name: (score, [checkpoint names])}."""
    folder.mkdir(parents=True)
    (folder / "experiment.json").write_text(json.dumps({
        "space": "extended", "data": str(folder / "data"), "synthetic": False,
        "split": {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 3}, "test_ids": ["a", "b"],
    }))
    rows = []
    for trial, (score, checkpoints) in trials.items():
        for name in checkpoints:
            (folder / trial / name).mkdir(parents=True)
            (folder / trial / name / "checkpoint.json").write_text("{}")
        # Recorded where the search ran, which may not be here any more.
        rows.append({"rank": 0, "trial": trial, "score": score, "checkpoint": f"/elsewhere/{trial}/{checkpoints[-1]}"})
    rows.append({"rank": 0, "trial": "trial_failed", "score": "nan", "checkpoint": ""})
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["rank", "trial", "score", "checkpoint"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_top_k_takes_the_checkpoints_of_the_best_trials_in_this_folder(tmp_path):
    folder = fake_experiment(tmp_path / "exp", {
        "trial_a": (0.4, ["checkpoint_000001"]),
        "trial_b": (0.6, ["checkpoint_000000", "checkpoint_000002"]),
        "trial_c": (0.5, ["checkpoint_000003"]),
    })
    experiment = read_experiment(folder)
    assert experiment.val_fraction == 0.2 and experiment.seed == 3 and experiment.test_ids == ("a", "b")
    trial_b = [folder / "trial_b" / "checkpoint_000000", folder / "trial_b" / "checkpoint_000002"]
    assert top_checkpoints(experiment, 1) == trial_b
    assert top_checkpoints(experiment, 2) == trial_b + [folder / "trial_c" / "checkpoint_000003"]
    assert len(top_checkpoints(experiment, 10)) == 4  # the failed trial has no checkpoint
    assert trial_checkpoints(experiment, "trial_b") == [folder / "trial_b" / "checkpoint_000000", folder / "trial_b" / "checkpoint_000002"]
    with pytest.raises(ExperimentError, match="no trial 'trial_x'"):
        trial_checkpoints(experiment, "trial_x")


def test_a_halving_trials_candidates_are_its_checkpoints_validated_on_the_whole_split(tmp_path):
    """Its pruning rungs scored a subset (at the masks' scale): those checkpoints are no candidates once
    the trial has whole-split ones, which is what prediction reproduces."""
    folder = fake_experiment(tmp_path / "exp", {"trial_a": (0.5, ["checkpoint_000000", "checkpoint_000001",
                                                                    "checkpoint_000004", "checkpoint_000009"])})
    record = json.loads((folder / "experiment.json").read_text())
    (folder / "experiment.json").write_text(json.dumps({**record, "val_ids": ["v1", "v2", "v3"]}))
    for name, images in [("checkpoint_000000", 2), ("checkpoint_000001", 2), ("checkpoint_000004", 3), ("checkpoint_000009", 3)]:
        (folder / "trial_a" / name / "checkpoint.json").write_text(json.dumps({"metrics": {"images": images}}))
    assert trial_checkpoints(read_experiment(folder), "trial_a") == [folder / "trial_a" / "checkpoint_000004",
                                                                      folder / "trial_a" / "checkpoint_000009"]


def test_the_latest_experiment_is_found_and_its_absence_explained(tmp_path):
    import os

    with pytest.raises(ExperimentError, match="no search experiment"):
        latest_experiment(tmp_path / "runs")
    old = fake_experiment(tmp_path / "runs" / "old", {"t": (0.1, ["checkpoint_000000"])})
    new = fake_experiment(tmp_path / "runs" / "new", {"t": (0.1, ["checkpoint_000000"])})
    os.utime(old / "experiment.json", (1, 1))
    assert latest_experiment(tmp_path / "runs") == new


def test_an_experiments_ensemble_predicts_at_the_scales_it_was_calibrated_at(tiny_run, tmp_path):
    """ensemble.json records the multi-scale factors its post-processing was
    calibrated at (a refit keeps them only beyond the noise): loading the
    experiment uses them unless told otherwise; one written before them, one scale."""
    from dataclasses import asdict

    from nucjax.segmenter import Segmenter

    folder = fake_experiment(tmp_path / "exp", {"t": (0.1, ["checkpoint_000000"])})
    experiment = read_experiment(folder)
    members = [tiny_run / "checkpoints" / "epoch_0001", tiny_run / "checkpoints" / "epoch_0002"]
    postprocess = asdict(Segmenter.load(members).postprocess)
    experiment.write_ensemble(members, "mean", None, postprocess, (0.75, 1.0, 1.5))
    assert Segmenter.load(folder).scales == (0.75, 1.0, 1.5)
    assert Segmenter.load(folder, scales=(1.0,)).scales == (1.0,)
    plan = json.loads((folder / "ensemble.json").read_text())
    (folder / "ensemble.json").write_text(json.dumps({k: v for k, v in plan.items() if k != "scales"}))
    assert Segmenter.load(folder).scales == (1.0,)


@pytest.fixture(scope="module")
def resize_checkpoint(tmp_path_factory):
    """An (untrained) member of another input size and mode than tiny_run's 32 px crops."""
    from conftest import tiny_experiment
    from nucjax.models.unet import build_model
    from nucjax.checkpoints import save_checkpoint

    config = tiny_experiment(inputs={"size": 64, "mode": "resize"})
    folder = tmp_path_factory.mktemp("resize") / "checkpoint"
    save_checkpoint(folder, build_model(config.model), None, config, epoch=1, step=1, metrics={"score": 0.1})
    return folder


def test_members_of_different_sizes_combine_into_a_complete_submission(tiny_run, tiny_root, resize_checkpoint, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    checkpoints = [tiny_run / "checkpoints" / "epoch_0001", tiny_run / "checkpoints" / "epoch_0002", resize_checkpoint]
    predict.main(["--checkpoints", *map(str, checkpoints), "--data", str(tiny_root), "--out", str(out),
                  "--combine", "intersect", "--quorum", "2", "--select", "all", "--compare", "--tta",
                  "--labels", str(tmp_path / "labels"), "--overlays", str(tmp_path / "overlays")])
    printed = capsys.readouterr().out
    dataset = load_dataset(tiny_root)
    decoded = decode_submission(out, {s.image_id: s.labels.shape for s in dataset.samples})  # refuses overlaps
    assert set(decoded) == set(dataset.image_ids)
    import cv2

    for sample in dataset.samples:
        label_png = cv2.imread(str(tmp_path / "labels" / f"{sample.image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert label_png.dtype == np.uint16 and label_png.shape == sample.labels.shape
        np.testing.assert_array_equal(label_png > 0, decoded[sample.image_id] > 0)
    assert len(list((tmp_path / "overlays").iterdir())) == len(dataset.samples)
    with open(tmp_path / "sub_compare.csv") as handle:
        entries = list(csv.DictReader(handle))
    assert sorted(e["kind"] for e in entries) == ["combination"] * len(COMBINATIONS) + ["member"] * 3
    assert all(0 <= float(e["score"]) <= 1 for e in entries)
    # Each entry's gain over the best member is paired over the same images: the per-image
    # table's columns average to the scores, the best member's own gain is 0, and the
    # interval holds the mean gain.
    with open(tmp_path / "sub_compare_images.csv") as handle:
        per_image = list(csv.DictReader(handle))
    assert {row["image_id"] for row in per_image} == set(dataset.image_ids)
    members = [e for e in entries if e["kind"] == "member"]
    best = max(members, key=lambda e: float(e["score"]))
    # The average member: each image's mean over the members' scores.
    average = np.mean([[float(row[m["name"]]) for m in members] for row in per_image], axis=1)
    for entry in entries:
        column = [float(row[entry["name"]]) for row in per_image]
        assert np.mean(column) == pytest.approx(float(entry["score"]), abs=1e-5)
        gain = np.mean(column) - np.mean([float(row[best["name"]]) for row in per_image])
        assert float(entry["vs_best_member"]) == pytest.approx(gain, abs=1e-5)
        assert float(entry["low"]) <= float(entry["vs_best_member"]) <= float(entry["high"])
        assert float(entry["vs_average_member"]) == pytest.approx(np.mean(column) - average.mean(), abs=1e-5)
        assert float(entry["average_low"]) <= float(entry["vs_average_member"]) <= float(entry["average_high"])
    assert float(best["vs_best_member"]) == float(best["low"]) == float(best["high"]) == 0
    # The members' gains over their own average sum to zero.
    assert sum(float(m["vs_average_member"]) for m in members) == pytest.approx(0, abs=1e-5)
    assert (tmp_path / "sub_compare.png").stat().st_size > 1000
    assert printed.strip().splitlines()[-1].startswith("Kaggle score: ")


def test_an_unreadable_image_gets_an_empty_row_and_the_others_are_predicted(tiny_run, tiny_samples, tmp_path, capsys):
    import cv2

    data = tmp_path / "data"
    data.mkdir()
    for s in tiny_samples[:2]:
        cv2.imwrite(str(data / f"{s.image_id}.png"), s.image[..., ::-1])
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "sub.csv"
    predict.main(["--checkpoints", str(tiny_run), "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert "broken.png" in err and "no labelled validation images" in err
    rows = read_submission(out)
    assert set(rows) == {s.image_id for s in tiny_samples[:2]} | {"broken"}
    assert [r[1] for r in rows["broken"]] == [""]


def test_a_checkpoint_of_another_format_is_named(tiny_run, tiny_root, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run / "checkpoints" / "epoch_0002", bad)
    record = json.loads((bad / "checkpoint.json").read_text())
    (bad / "checkpoint.json").write_text(json.dumps({**record, "format": 99}))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoints", str(tiny_run), str(bad), "--data", str(tiny_root), "--out", str(tmp_path / "s.csv")])
    assert exit_info.value.code == 2
    assert str(bad) in capsys.readouterr().err


def test_no_experiment_to_default_to_is_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([])
    assert exit_info.value.code == 2
    assert "no search experiment" in capsys.readouterr().err


def test_a_solution_scores_a_folder_of_plain_images(tiny_run, tiny_root, tiny_samples, tmp_path, capsys):
    import cv2

    data = tmp_path / "plain"
    data.mkdir()
    for s in tiny_samples:
        cv2.imwrite(str(data / f"{s.image_id}.png"), s.image[..., ::-1])
    out = tmp_path / "sub.csv"
    predict.main(["--checkpoints", str(tiny_run), "--data", str(data), "--solution", str(tiny_root), "--out", str(out)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"Kaggle score: \d\.\d{4}", last)
    from nucjax.score import main as score_main

    score_main([str(out), str(tiny_root)])  # the submission scores the same with the scoring command
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(float(last.split(": ")[1]), abs=6e-5)


def test_compare_shows_the_greedy_choice_beside_every_candidate(tiny_run, tiny_root, resize_checkpoint, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    checkpoints = [tiny_run / "checkpoints" / "epoch_0001", tiny_run / "checkpoints" / "epoch_0002", resize_checkpoint]
    predict.main(["--checkpoints", *map(str, checkpoints), "--data", str(tiny_root), "--out", str(out), "--compare"])
    err = capsys.readouterr().err
    kept = re.search(r"(\d) members?, mean", err)
    assert "greedy selection on validation" in err and kept
    with open(tmp_path / "sub_compare.csv") as handle:
        names = sorted(e["name"] for e in csv.DictReader(handle) if e["kind"] == "combination")
    chosen = int(kept.group(1))
    expected = [f"{m} of {chosen}" + (" (all)" if chosen == 3 else "") for m in COMBINATIONS]
    if chosen < 3:
        expected += [f"{m} of 3 (all)" for m in COMBINATIONS]
    assert names == sorted(expected)


def test_calibration_uses_the_experiments_validation_split_recorded_or_recomputed(tiny_root, tmp_path):
    from ensemble.images import calibration_samples, prediction_sources
    from nucjax.data import image_kind, stratified_split

    samples = load_dataset(tiny_root).samples
    split = stratified_split([s.image_id for s in samples], [image_kind(s.image) for s in samples], 0.3, 0.2, seed=1)
    assert split.val and split.test
    record = {"space": "extended", "data": str(tiny_root), "synthetic": False, "test_ids": list(split.test),
              "split": {"val_fraction": 0.3, "test_fraction": 0.2, "seed": 1}}
    for name, extra in (("recorded", {"val_ids": list(split.val)}), ("recomputed", {})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "experiment.json").write_text(json.dumps({**record, **extra}))
        experiment = read_experiment(folder)
        chosen, _ = calibration_samples([], experiment, None, tmp_path / "cache")
        assert sorted(s.image_id for s in chosen) == sorted(split.val) and all(s.labels is not None for s in chosen)
        sources, _ = prediction_sources(None, experiment, tmp_path / "cache")
        assert sorted(s.image_id for s in sources) == sorted(split.test)


@pytest.mark.parametrize("quorum, message", [("0", "--quorum must be at least 1"), ("3", "--quorum 3 needs at least 3 members")])
def test_an_impossible_quorum_is_refused(tiny_run, tiny_root, tmp_path, capsys, quorum, message):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoints", str(tiny_run / "checkpoints" / "epoch_0001"), str(tiny_run / "checkpoints" / "epoch_0002"),
                      "--data", str(tiny_root), "--combine", "intersect", "--quorum", quorum, "--out", str(tmp_path / "s.csv")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
