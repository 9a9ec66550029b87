"""End-to-end runs of python -m nucjax.train and python -m nucjax.predict on the tiny set."""

import re
import shutil

import pytest
from PIL import Image

from nucjax import predict
from nucjax.data import load_dataset
from nucjax.submission import decode_submission, read_submission
from nucjax.train.__main__ import main as train_main
from nucjax.checkpoints import list_checkpoints


def test_train_command_writes_checkpoints_and_a_film_frame_per_epoch(tiny_run, capsys):
    assert [c.epoch for c in list_checkpoints(tiny_run)] == [1, 2]
    film = Image.open(tiny_run / "film.gif")
    assert film.n_frames == 2
    assert sorted(p.name for p in (tiny_run / "film").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert (tiny_run / "config.json").is_file()


def test_train_command_resumes_a_finished_run_without_retraining(tiny_run, tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = [(c.epoch, c.step) for c in list_checkpoints(run)]
    train_main(["--data", str(tiny_root), "--out", str(run), "--val-fraction", "0.3"])
    captured = capsys.readouterr()
    assert "resuming" in captured.err and "from epoch 2" in captured.err
    assert [(c.epoch, c.step) for c in list_checkpoints(run)] == before
    assert "best checkpoint:" in captured.out


def test_predict_command_writes_every_image(tiny_run, tiny_root, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    predict.main(["--checkpoint", str(tiny_run), "--data", str(tiny_root), "--out", str(out)])
    printed = capsys.readouterr().out
    dataset = load_dataset(tiny_root)
    decoded = decode_submission(out, {s.image_id: s.labels.shape for s in dataset.samples})
    assert set(decoded) == set(dataset.image_ids)
    assert printed.strip().splitlines()[-1].startswith("Kaggle score: ")


def test_predict_scales_per_image_on_request(tiny_run, tiny_root, tmp_path, capsys):
    out = tmp_path / "per_image.csv"
    predict.main(["--checkpoint", str(tiny_run), "--data", str(tiny_root), "--out", str(out), "--scale-by", "image"])
    assert set(read_submission(out)) == set(load_dataset(tiny_root).image_ids)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", str(tiny_run), "--data", str(tiny_root), "--scale-by", "folder"])
    assert exit_info.value.code == 2 and "--scale-by" in capsys.readouterr().err


def test_predict_reports_an_unreadable_image_and_predicts_the_others(tiny_run, tiny_samples, tmp_path, capsys):
    import cv2

    for s in tiny_samples[:2]:
        cv2.imwrite(str(tmp_path / f"{s.image_id}.png"), s.image[..., ::-1])
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "out" / "sub.csv"
    predict.main(["--checkpoint", str(tiny_run / "checkpoints" / "epoch_0002"), "--data", str(tmp_path), "--out", str(out)])
    assert "broken.tif" in capsys.readouterr().err
    rows = read_submission(out)
    assert set(rows) == {s.image_id for s in tiny_samples[:2]} | {"broken"}
    assert rows["broken"] == [(rows["broken"][0][0], "")]


@pytest.mark.parametrize("method", ["cc", "reference", "distance", "border"])
def test_predict_with_each_post_processing_and_overlays(tiny_run, tiny_root, tmp_path, capsys, method):
    out = tmp_path / "sub.csv"
    predict.main(["--checkpoint", str(tiny_run), "--data", str(tiny_root), "--out", str(out),
                  "--postprocess", method, "--overlays", str(tmp_path / "overlays")])
    dataset = load_dataset(tiny_root)
    assert set(decode_submission(out, {s.image_id: s.labels.shape for s in dataset.samples})) == set(dataset.image_ids)
    overlays = sorted(p.stem for p in (tmp_path / "overlays").iterdir())
    assert overlays == sorted(dataset.image_ids)


def test_predict_with_a_bad_checkpoint_exits_2(tmp_path, tiny_root, capsys):
    with pytest.raises(SystemExit) as stop:
        predict.main(["--checkpoint", str(tmp_path), "--data", str(tiny_root)])
    assert stop.value.code == 2
    assert "neither a checkpoint folder nor a training run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--size", "40"], "does not divide by 2\\*\\*depth = 16"),
    (["--base-filters", "0"], "must be positive"),
])
def test_train_command_refuses_a_bad_config_before_loading_data(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        train_main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")] + argv)
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_predict_the_validation_split_the_checkpoint_was_scored_on(tiny_run, tiny_root, tmp_path, capsys):
    from nucjax.data import split_samples
    from nucjax.checkpoints import resolve_checkpoint

    out = tmp_path / "val.csv"
    predict.main(["--checkpoint", str(tiny_run), "--data", str(tiny_root), "--out", str(out), "--split", "val"])
    config = resolve_checkpoint(tiny_run).config
    assert config.train.split == "group"  # the default: whole experiments held out
    _, val, _ = split_samples(load_dataset(tiny_root).samples, config.train.val_fraction, seed=config.train.seed, method="group")
    assert set(read_submission(out)) == {s.image_id for s in val} and val
