"""What the command-line entry points share: the --data flag, the synthetic
default, and how skipped input is reported. Side effects live here and in
the entry points, not in the library."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

DATA_HELP = """\
data: a folder in Kaggle's layout (<id>/images/<id>.png, <id>/masks/*.png)
or a plain folder of PNG/TIF images. Without --data, a synthetic DSB-like set
is generated once into $NUCJAX_CACHE (default ~/.cache/nucjax) and used.

bad input: a missing folder, or one with no image, stops the command. A
sample with no images/ folder, an unreadable or truncated image, or (when
labels are needed) a missing or empty masks/ folder, an unreadable mask or
a mask of another size than its image is skipped with a warning naming the
file; the rest of the set still loads. Stray non-image files and empty
masks are ignored with a warning. --strict makes any of these an error.
Pixels claimed by two masks go to the smaller nucleus."""


def data_command_parser(module: str, docstring: str, data_help: str = "dataset folder (default: the synthetic set)") -> argparse.ArgumentParser:
    """A parser for `python -m module` that reads a dataset: its description
    is the docstring after the title line, --help ends with DATA_HELP."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=docstring.split("\n\n", 1)[1],
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, help=data_help)
    parser.add_argument("--strict", action="store_true", help="stop at the first skipped file instead of warning")
    return parser


def cache_root() -> Path:
    return Path(os.environ.get("NUCJAX_CACHE", Path.home() / ".cache" / "nucjax"))


def compilation_cache_environment(cache_dir: Path | None = None) -> dict[str, str]:
    """The environment that makes JAX keep every compiled program in
    cache_dir (default: the shared one under cache_root()), however small
    or quick to compile: a second run then skips most of its compiling."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir or cache_root().absolute() / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def use_compilation_cache(cache_dir: Path | None = None) -> None:
    """Use that cache unless the environment already names one; call before
    JAX is imported."""
    for name, value in compilation_cache_environment(cache_dir).items():
        os.environ.setdefault(name, value)


def synthetic_root(config=None) -> Path:
    """The synthetic set's folder, generated on first use; the folder name
    carries the config so a different config never reuses stale files."""
    from nucjax.data import SyntheticConfig, generate, write_kaggle_sample
    from nucjax.data.synthetic import GENERATOR_VERSION

    config = config or SyntheticConfig()
    text = json.dumps({**asdict(config), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    root = cache_root() / f"synthetic-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not (root / ".synthetic_config.json").exists():
        print(f"generating {config.n_images} synthetic images into {root} ...", file=sys.stderr)
        # Build beside, then rename: a concurrent run never sees half a set.
        staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for sample in generate(config):
            write_kaggle_sample(sample, staging)
        (staging / ".synthetic_config.json").write_text(text)
        try:
            staging.rename(root)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return root


def data_root(data: Path | None) -> Path:
    return synthetic_root() if data is None else data


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
