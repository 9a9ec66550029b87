"""python -m nucjax.export: a trained model as a bioimage.io model package.

MODEL is a checkpoint, a training run (its best checkpoint) or a search
experiment (its best checkpoint: the format holds one network, so an
ensemble's members are exported one package each, by their checkpoints).
The package (a zip: rdf.yaml, ONNX weights with free height and width,
test tensors from the JAX model, a cover and a README) is validated with
bioimageio.spec and, unless --no-test, passes bioimageio.core's model
test (the ONNX weights run on the test input and must give the test
output) before it is moved to --out; nothing is left behind otherwise.
Fiji (deepImageJ), QuPath, ilastik and napari open it; nucjax too:
`Segmenter.load("model.zip")` or `nucjax.predict --checkpoint model.zip`.
Needs the export extra: pip install -e ".[export]".
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from nucjax.cli import fail


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nucjax.export", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, metavar="MODEL", help="checkpoint, training run or search experiment folder")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL.zip", help="the package to write (a .zip)")
    parser.add_argument("--image", type=Path,
                        help="an image for the test tensors and the cover (default: a synthetic fluorescence image); "
                             f"its top-left corner is used, at most 256 px a side")
    parser.add_argument("--training-data", choices=("dsb2018", "synthetic"),
                        help="what the model was trained on, for the package's description (default: an experiment's "
                             "own record; dsb2018 for a checkpoint or run)")
    parser.add_argument("--no-test", action="store_true", help="validate the description only; skip bioimageio.core's model test")
    return parser.parse_args(argv)


def checked_out(out: Path) -> Path:
    """--out as an absolute .zip path in a writable folder; exits 2 otherwise, before any work."""
    if out.suffix != ".zip":
        fail(f"--out {out}: a bioimage.io package is a .zip file")
    if out.is_dir():
        fail(f"--out {out}: is a folder")
    folder = out.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        fail(f"--out {out}: cannot write into {folder}")
    return out.absolute()


def checkpoint_of(path: Path, training_data: str | None) -> tuple[Path, str]:
    """(the checkpoint to export, what it was trained on): a search
    experiment's best checkpoint and its data (synthetic or not), any
    other folder as it is, trained on DSB2018 unless training_data says."""
    from nucjax.experiment import ExperimentError, is_experiment, read_experiment

    if not is_experiment(path):
        return path, training_data or "dsb2018"
    try:
        experiment = read_experiment(path)
        return experiment.best_checkpoint(), training_data or ("synthetic" if experiment.synthetic else "dsb2018")
    except ExperimentError as err:
        fail(str(err))


def test_image(path: Path | None):
    """The --image, or a synthetic fluorescence image."""
    if path is None:
        from nucjax.data.split import FLUORESCENCE
        from nucjax.data.synthetic import SyntheticConfig, synthetic_sample

        return synthetic_sample(SyntheticConfig(n_images=1, sizes=((256, 256),), size_weights=(1,)), 0, FLUORESCENCE).image
    from nucjax.data import DataError, read_image

    try:
        return read_image(path)
    except DataError as err:
        fail(str(err))


def validated(rdf: Path, out: Path, run_test: bool) -> str:
    """Validate the package folder of rdf, zip it to out and run the model
    test on the zip; returns the test's status line. PackageError on failure."""
    from bioimageio.core import test_model
    from bioimageio.spec import InvalidDescr, load_description, save_bioimageio_package

    from nucjax.bioimage import PackageError

    description = load_description(rdf, perform_io_checks=True)
    if isinstance(description, InvalidDescr):
        raise PackageError(f"the description does not validate:\n{description.validation_summary.format()}")
    save_bioimageio_package(description, output_path=out)
    if not run_test:
        return "format valid (model test skipped)"
    summary = test_model(out)
    if summary.status != "passed":
        raise PackageError(f"bioimageio.core's model test failed:\n{summary.format()}")
    return "format valid, model test passed"


def main(argv=None) -> None:
    args = parse_args(argv)
    out = checked_out(args.out)
    from nucjax.cli import use_jax_environment

    use_jax_environment()
    try:
        from nucjax.bioimage import PackageError, check_exportable, write_package
    except ImportError as err:
        fail(f"export needs the export extra ({err.name} is missing): pip install -e \".[export]\"")
    from nucjax.checkpoints import CheckpointError, load_model

    checkpoint, training_data = checkpoint_of(args.model, args.training_data)
    try:
        network, info = load_model(checkpoint)
    except CheckpointError as err:
        fail(str(err))
    try:
        check_exportable(info.config)
    except PackageError as err:
        fail(f"{info.path}: {err}")
    image = test_image(args.image)
    from nucjax.segmenter import model_name

    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        (work / "package").mkdir()
        rdf = write_package(work / "package", network, info.config, model_name(info.path), info.score, image,
                            {"epoch": info.epoch, "step": info.step}, training_data)
        status = validated(rdf, work / out.name, not args.no_test)
        os.replace(work / out.name, out)
    except PackageError as err:
        fail(f"{info.path}: {err}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {info.path}: {status}", file=sys.stderr)


if __name__ == "__main__":
    main()
