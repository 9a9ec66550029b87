"""The documentation: the site builds with `mkdocs build --strict` (a
broken link or a missing API page fails), and every command the README
and the getting-started page show is one whose `--help` works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The pages a newcomer copies commands from.
PAGES = (ROOT / "README.md", ROOT / "docs" / "getting-started.md")


def shown_modules() -> list[str]:
    """Every `python -m MODULE` the pages show, in order, once each."""
    found = []
    for page in PAGES:
        for module in re.findall(r"python3? -m ([\w.]+)", page.read_text()):
            if module not in found and module.split(".")[0] in ("nucjax", "search", "ensemble"):
                found.append(module)
    return found


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "nucjax.segmenter.Segmenter" in api and "segment_folder" in api  # mkdocstrings rendered the API


def test_the_pages_show_every_command():
    assert {"nucjax.train", "nucjax.predict", "search.run", "search.report", "ensemble.predict", "nucjax.export",
            "nucjax.baseline", "nucjax.score"} <= set(shown_modules())


#: The commands that read a dataset: their --help ends with the data rules (nucjax.cli.DATA_HELP).
DATA_COMMANDS = {"nucjax.train", "nucjax.predict", "nucjax.baseline", "nucjax.explore", "search.run", "ensemble.predict"}


@pytest.mark.parametrize("module", shown_modules())
def test_every_command_shown_has_help_on_one_screen(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") and len(done.stdout.splitlines()) <= 60
    assert ("skipped with a warning" in done.stdout) == (module in DATA_COMMANDS)
