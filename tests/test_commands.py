"""End-to-end runs of the command-line entry points on the tiny set."""

import numpy as np
import pytest

from nucjax import baseline, explore, score
from nucjax.data import load_dataset
from nucjax.submission import decode_submission, read_submission, write_submission


def run_score(capsys, *argv):
    with pytest.raises(SystemExit) as stop:
        score.main([str(a) for a in argv])
    return stop.value.code, capsys.readouterr()


def test_score_of_the_truth_itself_is_one(tmp_path, tiny_root, capsys):
    dataset = load_dataset(tiny_root)
    write_submission(tmp_path / "s.csv", [(s.image_id, s.labels) for s in dataset.samples])
    score.main([str(tmp_path / "s.csv"), str(tiny_root), "--per-image"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "1.000000"
    assert len(out) == 1 + len(dataset) + 1  # header, one row per image, the mean


def test_score_against_a_solution_csv(tmp_path, tiny_root, capsys):
    dataset = load_dataset(tiny_root)
    rows = ["ImageId,EncodedPixels,Height,Width,Usage"]
    from nucjax.submission import submission_rows

    for s in dataset.samples:
        h, w = s.labels.shape
        rows += [f"{i},{e},{h},{w},Public" for i, e in submission_rows(s.image_id, s.labels)]
    (tmp_path / "solution.csv").write_text("\n".join(rows) + "\n")
    # Half the images predicted empty: each scores 0.
    preds = [(s.image_id, s.labels if k % 2 else np.zeros_like(s.labels)) for k, s in enumerate(dataset.samples)]
    write_submission(tmp_path / "s.csv", preds)
    score.main([str(tmp_path / "s.csv"), str(tmp_path / "solution.csv")])
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(0.5)


def test_malformed_submission_exits_2_naming_the_row(tmp_path, tiny_root, capsys):
    dataset = load_dataset(tiny_root)
    write_submission(tmp_path / "s.csv", [(s.image_id, s.labels) for s in dataset.samples])
    lines = (tmp_path / "s.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",1 2 3"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    code, captured = run_score(capsys, tmp_path / "bad.csv", tiny_root)
    assert code == 2
    assert "row 4" in captured.err and "odd number" in captured.err

    code, captured = run_score(capsys, tmp_path / "missing.csv", tiny_root)
    assert code == 2 and "no such file" in captured.err


def test_score_refuses_a_truth_folder_that_lost_a_sample(tmp_path, tiny_root, capsys):
    import shutil

    dataset = load_dataset(tiny_root)
    write_submission(tmp_path / "s.csv", [(s.image_id, s.labels) for s in dataset.samples])
    truth = tmp_path / "truth"
    shutil.copytree(tiny_root, truth)
    (truth / "notes.txt").write_text("a stray file is fine")
    score.main([str(tmp_path / "s.csv"), str(truth)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1.000000"
    shutil.rmtree(truth / dataset.image_ids[0] / "masks")
    code, captured = run_score(capsys, tmp_path / "s.csv", truth)
    assert code == 2 and "no masks/ folder" in captured.err and "every truth image" in captured.err


def test_baseline_writes_a_complete_submission_and_scores_it(tmp_path, tiny_root, capsys):
    out = tmp_path / "sub.csv"
    baseline.main(["--data", str(tiny_root), "--out", str(out), "--sweep", "--val-fraction", "0.3"])
    printed = capsys.readouterr().out
    assert "threshold by Kaggle metric" in printed
    dataset = load_dataset(tiny_root)
    shapes = {s.image_id: s.labels.shape for s in dataset.samples}
    decoded = decode_submission(out, shapes)  # every image, no overlap, runs in range
    assert set(decoded) == set(shapes)
    val_score = float(printed.strip().splitlines()[-1].split()[-1])
    assert 0 < val_score <= 1


def test_baseline_runs_on_the_synthetic_default(tmp_path, capsys, monkeypatch):
    from nucjax import cli
    from nucjax.data import SyntheticConfig

    small = SyntheticConfig(n_images=4, seed=5, sizes=((48, 48),), size_weights=(1,))
    monkeypatch.setattr(baseline, "data_root", lambda data: cli.synthetic_set(small) if data is None else data)
    baseline.main(["--out", str(tmp_path / "sub.csv")])
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "sub.csv").read_text().startswith("ImageId,EncodedPixels\n")


def test_baseline_writes_every_image_and_an_empty_row_for_an_unreadable_one(tmp_path, tiny_samples, capsys):
    import cv2

    for s in tiny_samples[:3]:
        cv2.imwrite(str(tmp_path / f"{s.image_id}.png"), s.image[..., ::-1])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    baseline.main(["--data", str(tmp_path), "--out", str(tmp_path / "sub.csv")])
    captured = capsys.readouterr()
    assert "broken.png" in captured.err
    rows = read_submission(tmp_path / "sub.csv")
    assert set(rows) == {s.image_id for s in tiny_samples[:3]} | {"broken"}
    assert [encoded for _, encoded in rows["broken"]] == [""]


def test_baseline_with_a_missing_folder_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        baseline.main(["--data", str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert "no such folder" in capsys.readouterr().err


def test_explore_writes_plots_and_summary(tmp_path, tiny_root, capsys):
    explore.main(["--data", str(tiny_root), "--out", str(tmp_path / "ex"), "--sweep"])
    names = {p.name for p in (tmp_path / "ex").iterdir()}
    assert {"kinds.png", "sizes.png", "intensity.png", "nuclei_per_image.png", "nucleus_area.png",
            "threshold_sweep.png", "summary.txt"} <= names
    summary = (tmp_path / "ex" / "summary.txt").read_text()
    assert "images: 8" in summary and "best threshold by Kaggle metric" in summary


def test_no_library_module_outside_training_imports_it():
    """Reading a checkpoint is not training: the public API and every stage
    outside nucjax/train/ import nothing from it (nucjax.checkpoints sits below)."""
    import ast
    from pathlib import Path

    library = Path(__file__).resolve().parents[1] / "nucjax"
    offenders = []
    for path in library.rglob("*.py"):
        if path.parent.name == "train":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(library)}: {n}" for n in names if n == "nucjax.train" or n.startswith("nucjax.train.")]
    assert not offenders, offenders
