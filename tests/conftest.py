"""Shared fixtures: a tiny synthetic set in Kaggle's layout, and the real
DSB2018 folder when ../shared has it."""

from __future__ import annotations

from pathlib import Path

import pytest

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
