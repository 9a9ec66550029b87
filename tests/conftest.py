"""Shared fixtures: a tiny synthetic set in Kaggle's layout, and the real
DSB2018 folder when ../shared has it."""

from __future__ import annotations

from pathlib import Path

from nucjax.cli import use_jax_environment

# One JAX compilation cache (and the CPU convolution flag) for every test process, set before JAX loads.
use_jax_environment(Path(__file__).resolve().parents[1] / ".jax_cache")

import pytest  # noqa: E402

from nucjax.data import SyntheticConfig, generate, write_kaggle_sample

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018" / "stage1_train"

#: Small images, every kind present: fast enough for any test.
TINY = SyntheticConfig(n_images=8, seed=7, sizes=((64, 64), (48, 80)), size_weights=(0.5, 0.5))


@pytest.fixture(scope="session")
def tiny_samples():
    return list(generate(TINY))


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, tiny_samples):
    """TINY written in Kaggle's layout; tests must not modify it."""
    root = tmp_path_factory.mktemp("tiny")
    for sample in tiny_samples:
        write_kaggle_sample(sample, root)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Commands run in tests generate their synthetic default under a temp cache."""
    monkeypatch.setenv("NUCJAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def real_ids(n: int) -> list[str]:
    return sorted(p.name for p in REAL_ROOT.iterdir())[:n]


needs_real = pytest.mark.skipif(not REAL_ROOT.is_dir(), reason="real DSB2018 data not present in ../shared")


def tiny_experiment(**sections):
    """A U-Net small enough to train in seconds on 32 px crops."""
    from nucjax.config import ExperimentConfig
    from nucjax.inputs import InputConfig
    from nucjax.models.unet import UNetConfig

    config = ExperimentConfig(
        model=UNetConfig(depth=2, base_filters=4, out_channels=2),
        inputs=InputConfig(size=32, mode="crop", border=True),
    ).replace(train={"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "warmup_steps": 1})
    return config.replace(**sections) if sections else config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_root):
    """A finished two-epoch run of python -m nucjax.train on the tiny set."""
    from nucjax.train.__main__ import main

    run = tmp_path_factory.mktemp("run") / "run"
    main(["--data", str(tiny_root), "--out", str(run), "--size", "32", "--depth", "2", "--base-filters", "4",
          "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "2", "--val-fraction", "0.3"])
    return run


#: With pyproject's `-n 2 --dist loadfile --no-loadscope-reorder`, files go to the two workers in this
#: order, two each to start: the two cluster files (each its own Ray cluster) one to each worker, then
#: the worked notebook (its own Ray) behind the shorter of them and a quick file behind the other, and
#: the rest to whichever is free.
FIRST_FILES = ("test_search.py", "test_search_recovery.py", "test_notebook.py", "test_rle.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: FIRST_FILES.index(item.path.name) if item.path.name in FIRST_FILES else len(FIRST_FILES))
