"""Models that leave nucjax: bioimage.io packages with ONNX weights
(nucjax.export), checked by the bioimage.io tools, and the ONNX Runtime
prediction path (--backend onnx)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nucjax.data import SyntheticConfig, generate

#: Images of odd and real-like sizes, every kind: what prediction pads and tiles.
ODD = SyntheticConfig(n_images=3, seed=11, sizes=((37, 53), (61, 90), (256, 320)), size_weights=(1, 1, 1))


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory, tiny_root):
    """A finished two-epoch run of the multi-arm U-Net on the tiny set (seed 2:
    this tiny net starts all-foreground from seeds 0 and 1, which training stops as a collapse)."""
    from nucjax.train.__main__ import main

    run = tmp_path_factory.mktemp("extended") / "run"
    main(["--data", str(tiny_root), "--out", str(run), "--model", "extended", "--size", "32", "--depth", "2",
          "--base-filters", "4", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", "--val-fraction", "0.3", "--seed", "2"])
    return run


@pytest.fixture(scope="module", params=["standard", "extended"])
def exported(request, tiny_run, extended_run, tmp_path_factory):
    """(run, package zip) of each kind of model, written by python -m nucjax.export."""
    from nucjax.export import main

    run = tiny_run if request.param == "standard" else extended_run
    out = tmp_path_factory.mktemp("export") / f"{request.param}.zip"
    main([str(run), "--out", str(out)])
    return run, out


def test_a_package_validates_and_passes_the_bioimageio_model_test(exported):
    from bioimageio.core import test_model
    from bioimageio.spec import load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    run, package = exported
    description = load_description(package, perform_io_checks=True)
    assert isinstance(description, ModelDescr), description.validation_summary.format()
    assert [w for w, entry in description.weights if entry is not None] == ["onnx"]
    assert test_model(package).status == "passed"
    # The height and width are free: multiples of 2**depth (4 for the tiny models).
    y_axis = description.inputs[0].axes[2]
    assert (y_axis.size.min, y_axis.size.step) == (32, 4)


def test_a_package_carries_the_checkpoint_config_and_loads_as_a_segmenter(exported, tiny_samples):
    from nucjax.bioimage import read_package
    from nucjax.segmenter import Segmenter
    from nucjax.checkpoints import resolve_checkpoint

    run, package = exported
    info = resolve_checkpoint(run)
    read = read_package(package)
    assert read.config == info.config  # thresholds, diameter, model: all of it round-trips
    assert read.config.postprocess.threshold == info.config.postprocess.threshold
    assert read.config.inputs.diameter == info.config.inputs.diameter
    assert read.score == pytest.approx(info.score)
    from_package = Segmenter.load(package)
    from_checkpoint = Segmenter.load(run, backend="onnx")
    for sample in tiny_samples[:3]:
        assert np.array_equal(from_package.segment(sample.image), from_checkpoint.segment(sample.image))


def test_onnx_and_jax_maps_agree_on_odd_and_real_sized_images(exported):
    from nucjax.segmenter import Segmenter

    run, _ = exported
    jax_segmenter = Segmenter.load(run, scale="native")
    onnx_segmenter = Segmenter.load(run, backend="onnx", scale="native")
    spread = 0.0
    for sample in generate(ODD):
        (jax_maps,), (onnx_maps,) = jax_segmenter.member_maps(sample.image)[1], onnx_segmenter.member_maps(sample.image)[1]
        assert jax_maps.shape == onnx_maps.shape == sample.image.shape[:2] + (2,)
        assert np.abs(jax_maps - onnx_maps).max() < 1e-4
        spread = max(spread, float(jax_maps.std()))
    assert spread > 1e-3  # the maps vary, so agreeing means something


@pytest.mark.parametrize("command", ["nucjax.predict", "ensemble.predict"])
def test_both_prediction_commands_score_with_the_onnx_backend_as_with_jax(command, tiny_run, tiny_root, tmp_path, capsys):
    from ensemble.predict import main as ensemble_main
    from nucjax.predict import main as predict_main

    main, argv = {"nucjax.predict": (predict_main, ["--checkpoint", str(tiny_run)]),
                  "ensemble.predict": (ensemble_main, ["--checkpoints", str(tiny_run), "--select", "all", "--no-calibrate"])}[command]
    scores = {}
    for backend in ("jax", "onnx"):
        main(argv + ["--data", str(tiny_root), "--backend", backend, "--out", str(tmp_path / f"{backend}.csv")])
        scores[backend] = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert scores["onnx"] == pytest.approx(scores["jax"], abs=1e-3)


def test_backend_onnx_without_onnxruntime_is_one_line_and_status_2(tiny_run, monkeypatch, capsys):
    import importlib.util

    from nucjax.predict import main

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else found(name, *a))
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(tiny_run), "--backend", "onnx"])
    assert exit_.value.code == 2
    assert "[export]" in capsys.readouterr().err.strip().splitlines()[-1]


def _refused(argv, out_folder, capsys) -> str:
    from nucjax.export import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ")
    assert not any(out_folder.iterdir())  # nothing half-written
    return error[0]


def test_export_refuses_bad_input_in_one_line_and_leaves_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    message = _refused([str(out), "--out", str(out / "m.zip")], out, capsys)
    assert "neither a checkpoint folder nor a training run" in message
    assert "a .zip" in _refused([str(tiny_run), "--out", str(out / "m.txt")], out, capsys)
    assert "cannot write" in _refused([str(tiny_run), "--out", str(tmp_path / "missing" / "m.zip")], out, capsys)
    # A model the format cannot express: the report's min-max stretch and colour boost.
    minmax = _changed_copy(tiny_run, tmp_path / "minmax", normalisation="minmax")
    assert "normalisation 'minmax'" in _refused([str(minmax), "--out", str(out / "m.zip")], out, capsys)


def _changed_copy(run, folder, **inputs):
    """A copy of the run's last checkpoint whose input settings say otherwise (same weights)."""
    shutil.copytree(run / "checkpoints" / "epoch_0002", folder)
    record = json.loads((folder / "checkpoint.json").read_text())
    record["config"]["inputs"].update(inputs)
    (folder / "checkpoint.json").write_text(json.dumps(record))
    return folder


def test_a_resize_mode_model_exports_at_its_one_size(tiny_run, tmp_path, capsys):
    from bioimageio.spec import load_description

    from nucjax.export import main

    resize = _changed_copy(tiny_run, tmp_path / "resize", mode="resize")
    main([str(resize), "--out", str(tmp_path / "resize.zip"), "--training-data", "synthetic"])
    assert "model test passed" in capsys.readouterr().err
    description = load_description(tmp_path / "resize.zip")
    assert [axis.size for axis in description.inputs[0].axes[2:]] == [32, 32]  # the squeezed square, fixed
    assert "synthetic" in description.training_data.name


@pytest.mark.parametrize("norm, model, smooth", [("group", "standard", 0.0), ("batch", "standard", 0.0),
                                                  ("batch", "standard", 1.5), ("batch", "extended", 1.0)])
def test_the_onnx_graph_computes_each_norm_and_the_input_smoothing_as_jax_does(norm, model, smooth):
    """The graph's group norm (its reductions, written out), folded batch
    norm and input smoothing (mirrored pads, fixed convolutions; each arm's
    input of the extended U-Net) give JAX's maps, with scales and shifts
    that are not the identity."""
    import jax
    from flax import nnx

    from nucjax.models.onnx_graph import network_graph, onnx_forward
    from nucjax.models.unet import UNetConfig, build_model

    config = UNetConfig(model=model, depth=2, base_filters=8, norm=norm, out_channels=2, smooth=smooth)
    network = build_model(config)
    rng = np.random.default_rng(0)
    for path, variable in nnx.iter_graph(network):
        if isinstance(variable, (nnx.Param, nnx.BatchStat)) and path[-1] in ("scale", "bias", "mean", "var"):
            variable[...] = variable[...] + rng.uniform(0.1, 0.5, variable.shape).astype(np.float32)
    network.eval()
    x = rng.uniform(0, 1, (2, 48, 40, config.in_channels)).astype(np.float32)
    expected = np.asarray(jax.nn.sigmoid(network(x)))
    got = onnx_forward(network_graph(network).SerializeToString(), model)(x)
    assert expected.std() > 1e-3
    assert np.abs(got - expected).max() < 1e-4
