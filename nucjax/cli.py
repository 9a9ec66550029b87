"""What the command-line entry points share: the --data flag, the synthetic
default, and how skipped input is reported. Side effects live here and in
the entry points, not in the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DATA_HELP = """\
data: Kaggle's layout (<id>/images/<id>.png, <id>/masks/*.png) or a folder
of PNG/TIF images; without --data, a synthetic DSB-like set generated once
into $NUCJAX_CACHE (default ~/.cache/nucjax). A file that cannot be read or
does not match is skipped with a warning naming it (--strict: an error);
docs/guide/data.md lists every case."""


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """--help with the description as written and each flag's help beside it."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def data_command_parser(module: str, docstring: str, data_help: str = "dataset folder (default: the synthetic set)",
                        usage: str | None = None) -> argparse.ArgumentParser:
    """A parser for `python -m module` that reads a dataset: its description
    is the docstring after the title line, --help ends with DATA_HELP."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        usage=usage,
        description=docstring.split("\n\n", 1)[1],
        epilog=DATA_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("--data", type=Path, metavar="DIR", help=data_help)
    parser.add_argument("--strict", action="store_true", help="stop at the first skipped file instead of warning")
    return parser


def cache_root() -> Path:
    return Path(os.environ.get("NUCJAX_CACHE", Path.home() / ".cache" / "nucjax"))


#: jaxlib 0.10 sends CPU convolutions of more than 16 channels to YNNPACK;
#: XLA's Eigen path runs the U-Nets' whole train step faster on this
#: project's CPUs (bench/train_throughput.py measures both in one run).
EIGEN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def cpu_convolution_flags() -> str:
    """The XLA flag that picks the faster CPU convolutions, for the jaxlib
    versions that know it (an unknown flag would stop XLA)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("jaxlib").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ""
    return EIGEN_CONVOLUTIONS if (major, minor) >= (0, 10) else ""


def jax_environment(cache_dir: Path | None = None, xla_flags: str = "") -> dict[str, str]:
    """The environment JAX should start with: every compiled program kept in
    cache_dir (default: the shared one under cache_root()), however small
    or quick to compile, so a second run skips most of its compiling; and
    XLA_FLAGS with xla_flags and the faster CPU convolutions."""
    env = {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir or cache_root().absolute() / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    flags = " ".join(f for f in (xla_flags, cpu_convolution_flags()) if f)
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def use_jax_environment(cache_dir: Path | None = None) -> None:
    """Set that environment where the user has not chosen otherwise (a
    cache already named stays; XLA_FLAGS keeps the user's and gains the
    convolution flag unless they chose that path); call before JAX is
    imported."""
    for name, value in jax_environment(cache_dir).items():
        if name != "XLA_FLAGS":
            os.environ.setdefault(name, value)
        elif "ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {value}".strip()


def synthetic_set(config=None) -> Path:
    """The synthetic set's folder (default config: the embedded default),
    generated under cache_root() on first use, saying so on stderr."""
    from nucjax.data import SyntheticConfig, synthetic_root
    from nucjax.data.cache import CONFIG_FILE, synthetic_folder

    config = config or SyntheticConfig()
    if not (synthetic_folder(config, cache_root()) / CONFIG_FILE).exists():
        print(f"generating {config.n_images} synthetic images into {synthetic_folder(config, cache_root())} ...", file=sys.stderr)
    return synthetic_root(config, cache_root())


def data_root(data: Path | None) -> Path:
    return synthetic_set() if data is None else data


def report_skipped(dataset) -> None:
    """Warn on stderr about every file a dataset left out."""
    for entry in dataset.skipped:
        print(f"warning: {entry}", file=sys.stderr)


def load_data(data: Path | None, strict: bool = False, labelled: bool | None = None):
    """Load --data (or the synthetic default), warn about what was skipped,
    and exit with status 2 and the reason when nothing can be loaded."""
    from nucjax.data import DataError, load_dataset

    try:
        dataset = load_dataset(data_root(data), labelled=labelled, strict=strict)
    except DataError as err:
        fail(str(err))
    report_skipped(dataset)
    return dataset


def fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def progress(items, total: int | None = None, description: str = ""):
    """items with a progress bar on stderr when it is a terminal, plain otherwise."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit="image", file=sys.stderr,
                disable=not sys.stderr.isatty(), leave=False)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """The outputs and options every prediction command shares, with one meaning."""
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", type=Path, default=Path("submission.csv"), metavar="CSV", help="submission (%(default)s)")
    outputs.add_argument("--labels", type=Path, metavar="DIR", help="also a 16-bit label PNG per image")
    outputs.add_argument("--overlays", type=Path, metavar="DIR", help="also each image with its nuclei outlined")
    outputs.add_argument("--solution", type=Path, metavar="PATH", help="score against a solution CSV or labelled folder")
    predicting = parser.add_argument_group("prediction")
    predicting.add_argument("--scale", default="model", metavar="HOW",
                            help="model, auto (each image's nucleus size), native or a factor (%(default)s)")
    predicting.add_argument("--scale-by", choices=("acquisition", "image"), default="acquisition", metavar="HOW",
                            help="auto scale per acquisition or per image (%(default)s)")
    predicting.add_argument("--tta", action="store_true", help="average over the 8 flips and rotations (8x slower)")
    predicting.add_argument("--scales", metavar="F,F,...",
                            help="multi-scale TTA, median of the maps, e.g. 0.75,1,1.5 (1; a fold ensemble: its refit's choice)")
    predicting.add_argument("--backend", choices=("jax", "onnx"), default="jax", metavar="NAME",
                            help="jax, or onnx (ONNX Runtime; the export extra) (%(default)s)")


def checked_backend(parser: argparse.ArgumentParser, backend: str) -> str:
    """--backend, once what it needs is installed; a parser error naming the extra otherwise."""
    from importlib.util import find_spec

    if backend == "onnx" and not (find_spec("onnx") and find_spec("onnxruntime")):
        parser.error('--backend onnx needs onnx and onnxruntime: pip install -e ".[export]"')
    return backend


def planned_for(segmenter, sources):
    """segmenter with the scale of every readable image of sources planned
    (Segmenter.planned), behind a progress bar."""
    from nucjax.segmenter import folder_images

    return segmenter.planned(progress(folder_images(sources), len(sources), "sizing nuclei"))


def checked_scales(parser: argparse.ArgumentParser, value: str | None) -> tuple[float, ...] | None:
    """--scales as factors; None when not given (the command's own default)."""
    from nucjax.segmenter import parse_scales

    if value is None:
        return None
    try:
        return parse_scales(value)
    except ValueError as err:
        parser.error(f"--scales: {err}")


def checked_scale(parser: argparse.ArgumentParser, value: str):
    from nucjax.segmenter import parse_scale

    try:
        return parse_scale(value)
    except ValueError as err:
        parser.error(f"--scale: {err}")


def image_sources(folder: Path | None, strict: bool):
    """The images of --data (or the synthetic default), warning about
    skipped files; exits with status 2 when there is none, or at the first
    skipped file with --strict."""
    from nucjax.data import DataError, find_samples

    try:
        sources, skipped = find_samples(data_root(folder))
    except DataError as err:
        fail(str(err))
    return checked_sources(sources, skipped, strict)


def checked_sources(sources, skipped, strict: bool):
    """sources, after a warning per skipped file, or exit 2 at the first with strict."""
    if strict and skipped:
        fail(f"{skipped[0]} (strict mode: fix or remove it)")
    for entry in skipped:
        warn(str(entry))
    return sources


def load_truth(path: Path, what: str) -> dict:
    """Truth label images by ImageId (nucjax.data.read_truth), warning
    about skipped files; exits with status 2 naming `what` when unusable."""
    from nucjax.data import DataError, read_truth

    try:
        truths, skipped = read_truth(path)
    except DataError as err:
        fail(f"{what}: {err}")
    for entry in skipped:
        warn(str(entry))
    return truths


def scores_by_kind_and_group(described: dict, groups: dict | None = None) -> str:
    """Two lines: the mean score by image kind and by acquisition group,
    from {image id: (image_descriptor, score)}; groups: {image id: group
    name} (a run's, so the names match its validation's), else clustered
    over these images."""
    from nucjax.data import acquisition_groups

    ids = list(described)
    groups = groups or acquisition_groups(ids, descriptors=[described[i][0] for i in ids])
    lines = []
    for title, key in (("by kind", lambda i: described[i][0][0]), ("by group", lambda i: groups[i])):
        buckets: dict[str, list[float]] = {}
        for image_id in ids:
            buckets.setdefault(key(image_id), []).append(described[image_id][1])
        lines.append(f"{title}: " + ", ".join(f"{k} {sum(v) / len(v):.4f} ({len(v)})" for k, v in sorted(buckets.items())))
    return "\n".join(lines)


def predict_folder(segment, sources, args, score_label: str = "Kaggle score", report=None,
                   groups: dict | None = None) -> tuple[list, dict]:
    """Segment every source with segment (see nucjax.segmenter.segment_folder),
    write the submission (a row for every image: empty where unreadable)
    and the --labels and --overlays, call report(scores, image_ids) when
    given (the labelled images' ids, in the scores' order), and
    print the Kaggle score last where truth is known (by kind and by
    acquisition group first; groups: the names to use, see
    scores_by_kind_and_group). Returns
    (predictions, {outcome name: per-image scores})."""
    from nucjax.data import DataError
    from nucjax.data.kaggle import write_label_png
    from nucjax.data.split import image_descriptor
    from nucjax.pictures import contour_overlay, write_overlay
    from nucjax.segmenter import segment_folder
    from nucjax.submission import write_submission

    truths = load_truth(args.solution, "--solution") if args.solution else None
    predictions, scores, described = [], {}, {}
    try:
        for result in progress(segment_folder(segment, sources, strict=args.strict, truths=truths), len(sources), "segmenting"):
            if result.error:
                warn(f"{result.error}: written as an empty prediction")
            for note in result.notes:
                warn(note)
            predictions.append((result.image_id, result.labels))
            for name, score in (result.scores or {}).items():
                scores.setdefault(name, []).append(score)
            if result.scores:
                described[result.image_id] = (image_descriptor(result.image), next(iter(result.scores.values())))
            if result.image is None:
                continue
            if args.labels:
                write_label_png(args.labels / f"{result.image_id}.png", result.labels)
            if args.overlays:
                write_overlay(args.overlays / f"{result.image_id}.png", contour_overlay(result.image, result.labels))
    except DataError as err:
        fail(str(err))
    rows = write_submission(args.out, predictions)
    print(f"wrote {args.out}: {len(predictions)} images, {rows} rows")
    if report is not None:
        report(scores, list(described))  # the scored images, in the scores' order
    main_scores = next(iter(scores.values()), [])
    if main_scores:
        print(scores_by_kind_and_group(described, groups))
        missing = len(predictions) - len(main_scores)
        note = f" ({missing} images without truth left out)" if missing else ""
        print(f"{score_label}: {sum(main_scores) / len(main_scores):.4f}{note}")
    return predictions, scores
