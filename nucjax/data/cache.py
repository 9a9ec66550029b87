"""The synthetic set on disk: generated once per config into a cache
folder the caller names, so commands and tests reuse it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from nucjax.data.kaggle import write_kaggle_sample
from nucjax.data.synthetic import GENERATOR_VERSION, SyntheticConfig, generate

CONFIG_FILE = ".synthetic_config.json"


def synthetic_folder(config: SyntheticConfig, cache: Path) -> Path:
    """Where config's set lives under cache; the name carries the config,
    so a different config never reuses stale files."""
    text = json.dumps({**asdict(config), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    return Path(cache) / f"synthetic-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def synthetic_root(config: SyntheticConfig, cache: Path) -> Path:
    """The folder of config's set in Kaggle's layout, generated on first use."""
    root = synthetic_folder(config, cache)
    if (root / CONFIG_FILE).exists():
        return root
    # Build beside, then rename: a concurrent run never sees half a set.
    staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for sample in generate(config):
        write_kaggle_sample(sample, staging)
    (staging / CONFIG_FILE).write_text(json.dumps({**asdict(config), "generator_version": GENERATOR_VERSION}, sort_keys=True))
    try:
        staging.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return root
