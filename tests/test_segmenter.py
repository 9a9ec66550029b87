"""The public API and the one prediction path: Segmenter, segment_folder,
the commands that front them, and the experiment record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from nucjax.data import find_samples, load_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def test_one_checkpoint_gives_the_same_submission_through_both_commands(tiny_run, tiny_root, tmp_path):
    from ensemble import predict as ensemble_predict
    from nucjax import predict

    checkpoint = tiny_run / "checkpoints" / "epoch_0002"
    predict.main(["--checkpoint", str(checkpoint), "--data", str(tiny_root), "--out", str(tmp_path / "one.csv")])
    ensemble_predict.main(["--checkpoints", str(checkpoint), "--select", "all", "--no-calibrate", "--data", str(tiny_root),
                           "--out", str(tmp_path / "ensemble.csv")])
    one = (tmp_path / "one.csv").read_bytes()
    assert one == (tmp_path / "ensemble.csv").read_bytes() and one.count(b"\n") > len(load_dataset(tiny_root).samples)


@pytest.mark.parametrize("page", [README, README.parent / "docs" / "getting-started.md"], ids=["README", "getting-started"])
def test_the_readme_python_example_runs(page, tiny_run, tiny_samples, tmp_path, capsys):
    import cv2

    code = re.search(r"```python\n(.*?)```", page.read_text(), re.S).group(1)
    image_path = re.search(r'read_image\("([^"]+)"\)', code).group(1)
    if not (README.parent / image_path).is_file():  # no ../shared here: any image will do
        image_path = str(tmp_path / "image.png")
        cv2.imwrite(image_path, tiny_samples[0].image[..., ::-1])
    run = re.search(r'Segmenter\.load\("([^"]+)"\)', code).group(1)
    code = code.replace(f'"{run}"', repr(str(tiny_run))).replace(re.search(r'read_image\("([^"]+)"\)', code).group(1), image_path)
    exec(compile(code, page.name, "exec"), {"__name__": "readme"})
    assert re.fullmatch(r"\d+ nuclei; \(\d+, \d+, 2\)", capsys.readouterr().out.strip())


def test_segment_folder_gives_every_image_a_result_and_scores_the_labelled(tiny_run, tiny_root, tmp_path):
    from nucjax import Segmenter, segment_folder

    segmenter = Segmenter.load(tiny_run)
    sources, _ = find_samples(tiny_root)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    from nucjax.data.kaggle import SampleSource

    results = list(segment_folder(segmenter.segment, [*sources, SampleSource("broken", broken, None)]))
    assert [r.image_id for r in results] == [s.image_id for s in sources] + ["broken"]
    assert all(r.labels.dtype == np.int32 and r.labels.shape == r.image.shape[:2] for r in results[:-1])
    assert all(0 <= r.scores[""] <= 1 for r in results[:-1])
    assert results[-1].error and "broken.png" in results[-1].error and results[-1].labels.shape == (1, 1)
    from nucjax.data import DataError

    with pytest.raises(DataError, match="broken.png"):
        list(segment_folder(segmenter.segment, [SampleSource("broken", broken, None)], strict=True))


@pytest.fixture
def folder_with_a_bad_image(tiny_samples, tmp_path):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for s in tiny_samples[:2]:
        cv2.imwrite(str(folder / f"{s.image_id}.png"), s.image[..., ::-1])
    (folder / "aaa_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not the rest")
    return folder


def command_lines(tiny_run, folder, out):
    from ensemble import predict as ensemble_predict
    from nucjax import baseline, predict

    return {
        "nucjax.predict": (predict.main, ["--checkpoint", str(tiny_run), "--data", str(folder), "--out", str(out)]),
        "ensemble.predict": (ensemble_predict.main, ["--checkpoints", str(tiny_run), "--data", str(folder), "--out", str(out)]),
        "nucjax.baseline": (baseline.main, ["--data", str(folder), "--out", str(out)]),
    }


@pytest.mark.parametrize("command", ["nucjax.predict", "ensemble.predict", "nucjax.baseline"])
def test_every_command_writes_the_empty_row_or_stops_with_strict(command, tiny_run, folder_with_a_bad_image, tmp_path, capsys):
    from nucjax.submission import read_submission

    out = tmp_path / "sub.csv"
    main, argv = command_lines(tiny_run, folder_with_a_bad_image, out)[command]
    main(argv)
    rows = read_submission(out)
    assert len(rows) == 3 and [encoded for _, encoded in rows["aaa_truncated"]] == [""]
    assert len([line for line in capsys.readouterr().err.splitlines() if "aaa_truncated.png" in line]) == 1  # one warning
    out.unlink()
    with pytest.raises(SystemExit) as stop:
        main(argv + ["--strict"])
    assert stop.value.code == 2 and "aaa_truncated.png" in capsys.readouterr().err and not out.exists()


def test_a_binary_file_given_to_score_gets_a_message_not_a_traceback(tiny_root, tmp_path, capsys):
    from nucjax import score

    binary = tmp_path / "sub.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    for argv in ([str(binary), str(tiny_root)], [str(tiny_root / ".." / "missing.csv"), str(binary)]):
        with pytest.raises(SystemExit) as stop:
            score.main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "not a UTF-8 text CSV" in err and "Traceback" not in err


def test_a_misspelt_search_key_is_refused_before_any_trial(monkeypatch, capsys):
    from search import run, spaces

    real = spaces.search_space
    monkeypatch.setattr(spaces, "search_space", lambda *a, **k: {**real(*a, **k), "lerning_rate": 0.1})
    with pytest.raises(SystemExit) as stop:
        run.check_args(run.parse_args([]))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'lerning_rate'" in err and "learning_rate" in err
    for name in spaces.SPACES:  # and the real spaces pass
        for smoke in (True, False):
            spaces.check_space(real(name, smoke, gpu=not smoke))


def test_params_translate_to_a_config_and_unknown_keys_name_the_known(tmp_path):
    from nucjax.config import ExperimentConfig, default_params, from_params

    assert from_params(default_params()) == ExperimentConfig()
    config = from_params({"model": "extended", "border": False, "border_weight": 2.0, "diameter": 0.0, "postprocess": "cc"})
    assert config.model.out_channels == 1 and not config.inputs.border and config.train.channel_weights == (1.0, 2.0)
    assert config.postprocess.method == "cc" and not config.inputs.rescales
    with pytest.raises(ValueError, match="'lr'.*known: .*learning_rate"):
        from_params({"lr": 0.1})


def test_experiment_records_round_trip_and_old_ones_still_read(tmp_path):
    from nucjax.data import SEARCH_SMOKE
    from nucjax.experiment import Experiment, read_experiment

    written = Experiment(tmp_path / "new", tmp_path / "data", "extended", SEARCH_SMOKE, "group", 0.2, 0.1, 3,
                         ("v1", "v2"), ("t1",), created="2026-11-27 10:00:00")
    written.write()
    written.write_results([{"rank": 1, "trial": "trial_a", "score": 0.5, "learning_rate": 0.002}], ["learning_rate", "size"])
    read = read_experiment(tmp_path / "new")
    assert read == Experiment(written.folder.absolute(), written.data, "extended", SEARCH_SMOKE, "group", 0.2, 0.1, 3,
                              ("v1", "v2"), ("t1",), "2026-11-27 10:00:00", read.results)
    assert read.results[0]["trial"] == "trial_a" and read.results[0]["learning_rate"] == "0.002"
    # As search.run wrote it before this change: no split method, a synthetic flag.
    old = tmp_path / "old"
    old.mkdir()
    (old / "experiment.json").write_text(json.dumps({
        "space": "extended", "data": "/gone", "synthetic": True, "created": "2026-11-01 09:00:00",
        "split": {"val_fraction": 0.15, "test_fraction": 0.1, "seed": 0}, "val_ids": ["a"], "test_ids": ["b"]}))
    before = read_experiment(old)
    assert before.split == "stratified" and before.synthetic == SEARCH_SMOKE and before.val_ids == ("a",)


def test_an_old_checkpoint_reads_as_it_trained(tiny_run, tmp_path):
    import shutil

    from nucjax.checkpoints import read_checkpoint

    old = tmp_path / "old"
    shutil.copytree(tiny_run / "checkpoints" / "epoch_0002", old)
    record = json.loads((old / "checkpoint.json").read_text())
    for section, fields in {"inputs": ("preprocessing", "normalisation", "diameter", "scale_jitter"),
                            "augment": ("recolour",), "train": ("split",)}.items():
        for name in fields:
            del record["config"][section][name]
    (old / "checkpoint.json").write_text(json.dumps(record))
    config = read_checkpoint(old).config
    assert (config.inputs.preprocessing, config.inputs.normalisation, config.inputs.diameter) == ("reference", "minmax", 0.0)
    assert config.augment.recolour == 0.0 and config.train.split == "stratified"


def test_each_image_is_post_processed_with_its_kinds_settings(tiny_run, tiny_samples):
    """A colour image takes histology's own threshold, a grey one the shared
    settings: on the same maps, the labels of the matching shared config."""
    import dataclasses

    from nucjax import Segmenter
    from nucjax.data.split import image_kind

    segmenter = Segmenter.load(tiny_run)
    sample = next(s for s in tiny_samples if image_kind(s.image) == "fluorescence")
    colour = sample.image.copy()
    colour[..., 0] = colour[..., 0] // 2  # tinted: a colour image
    assert image_kind(colour) == "histology"
    maps = np.zeros((*sample.labels.shape, 2), np.float32)
    maps[..., 0] = np.where(sample.labels > 0, 0.8, 0.1)  # found at 0.5, not at 0.9
    shared = segmenter.postprocess
    own = dataclasses.replace(shared, by_kind={"histology": {"threshold": 0.9, "seed_threshold": 0.9}})
    assert segmenter.labels(sample.image, 1.0, maps, own).max() > 0
    for image, expected in ((sample.image, shared), (colour, dataclasses.replace(shared, threshold=0.9, seed_threshold=0.9))):
        assert np.array_equal(segmenter.labels(image, 1.0, maps, own), segmenter.labels(image, 1.0, maps, expected))
    assert segmenter.labels(colour, 1.0, maps, own).max() == 0


def test_multi_scale_maps_are_the_median_of_each_scales_maps_at_the_working_size(tiny_run, tiny_samples):
    """--scales: each factor's maps, brought to the working size, combined
    pixel by pixel by their median (a pixel is nucleus where most agree);
    one factor of 1 is prediction as before, and a bad factor is refused."""
    from nucjax import Segmenter
    from nucjax.scale import resize_image
    from nucjax.segmenter import load_model, parse_scales

    model = load_model(tiny_run)
    image = tiny_samples[0].image
    single = Segmenter.of([model], scale="native")
    assert np.array_equal(single.member_maps(image)[1][0], single.replace(scales=(1.0,)).member_maps(image)[1][0])
    working, (combined,) = single.replace(scales=(0.5, 1.0, 2.0)).member_maps(image)
    assert working == 1.0 and combined.shape[:2] == image.shape[:2]
    each = []
    for factor in (0.5, 1.0, 2.0):
        _, (maps,) = Segmenter.of([model], scale=factor).member_maps(image)
        each.append(maps if maps.shape[:2] == image.shape[:2] else resize_image(maps, image.shape[:2]))
    assert np.allclose(combined, np.median(np.stack(each), axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[2], atol=1e-3)  # the scales did see the image differently
    assert parse_scales("0.75,1,1.5") == (0.75, 1.0, 1.5)
    for bad in ("0,1", "a", ""):
        with pytest.raises(ValueError, match="positive numbers"):
            parse_scales(bad)
