"""The --compare report: the Kaggle score of every single member and of each
combination on a labelled set, as a table and a bar plot, each with its
paired gains over the best member and over the average member (bootstrap
intervals over the images: a gain inside one is the images' noise), and
every image's score per entry.

The best member is picked on the very images it is scored on, so beating
it asks a combination to beat a lucky draw as well; the average member
(per image, the mean of the members' scores) is what a user gets who
takes one member without that knowledge."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucjax.metrics import Gain, paired_gain
from nucjax.postprocess import settings_text


@dataclass(frozen=True)
class Entry:
    name: str  # a member's name, or the combination's
    kind: str  # 'member' or 'combination'
    score: float  # mean Kaggle score over the images
    detail: str  # the member's checkpoint, or the combination's calibrated settings
    gain: Gain  # paired, over the best member on the same images
    over_average: Gain  # paired, over the average member (each image's mean member score)


def compared_entries(models, plans, scores: dict) -> list[Entry]:
    """Every member and plan as an Entry, each with its paired gains over
    the best member and the average member (scores: {name: per-image
    scores, one order})."""
    kinds = [(m.name, "member", str(m.path)) for m in models] + [(p.name, "combination", describe(p.segmenter.postprocess)) for p in plans]
    best = max((m.name for m in models), key=lambda name: np.mean(scores[name]))
    average = np.mean([scores[m.name] for m in models], axis=0)
    return [Entry(name, kind, float(np.mean(scores[name])), detail, paired_gain(scores[name], scores[best]),
                  paired_gain(scores[name], average))
            for name, kind, detail in kinds]


def gain_text(gain: Gain) -> str:
    return f"{gain.mean:+.4f} ({gain.low:+.4f} to {gain.high:+.4f})"


def table(entries: list[Entry]) -> str:
    """A plain-text table, best first: each entry's gains over the best
    member and the average member, with their 90% intervals."""
    ranked = sorted(entries, key=lambda e: -e.score)
    width = max([len(e.name) for e in entries] + [10])
    lines = [f"{'':2}{'name':<{width}}  {'kind':<11}  score   {'vs best member (90% interval)':<30}  vs average member"]
    for entry in ranked:
        lines.append(f"{'':2}{entry.name:<{width}}  {entry.kind:<11}  {entry.score:.4f}  {gain_text(entry.gain):<30}  "
                     f"{gain_text(entry.over_average)}")
    return "\n".join(lines)


def write_csv(entries: list[Entry], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "kind", "score", "vs_best_member", "low", "high",
                         "vs_average_member", "average_low", "average_high", "detail"])
        for entry in sorted(entries, key=lambda e: -e.score):
            gains = [f"{value:+.6f}" for gain in (entry.gain, entry.over_average) for value in (gain.mean, gain.low, gain.high)]
            writer.writerow([entry.name, entry.kind, f"{entry.score:.6f}", *gains, entry.detail])


def write_image_scores(entries: list[Entry], scores: dict, image_ids: list[str], path: Path) -> None:
    """One row per image, one column per entry: where a combination wins and loses."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *(e.name for e in entries)])
        for i, image_id in enumerate(image_ids):
            writer.writerow([image_id, *(f"{scores[e.name][i]:.6f}" for e in entries)])


def write_plot(entries: list[Entry], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(entries) + 2), 4.5))
    colours = ["#7f9fbf" if e.kind == "member" else "#d08040" for e in entries]
    bars = ax.bar(range(len(entries)), [e.score for e in entries], color=colours)
    best_member = max((e.score for e in entries if e.kind == "member"), default=None)
    if best_member is not None:
        ax.axhline(best_member, color="#40607f", linestyle="--", linewidth=1, label="best member")
        ax.legend(loc="lower right", fontsize=8)
    for bar, entry in zip(bars, entries):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{entry.score:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(entries)), [e.name for e in entries], rotation=30, ha="right", fontsize=8)
    low = min(e.score for e in entries)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(e.score for e in entries) + 0.03))  # the differences are small
    ax.set_ylabel("Kaggle score")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def describe(config) -> str:
    """A post-processing config in a few words (a kind's own settings after a semicolon)."""
    own = "".join(f"; {kind}: {settings_text(fields)}" for kind, fields in config.by_kind)
    return f"{config.method}, threshold {config.threshold:g}, seed {config.seed_threshold:g}, min size {config.min_size}{own}"


def write_comparison(out: Path, models, plans, scores: dict, image_ids: list[str],
                     experiment_folder: Path | None = None) -> None:
    """The --compare table (printed), its CSV, per-image CSV and plot beside
    out, and a copy of the table and plot in the experiment compared, for
    its report. scores: {name: per-image scores}, in image_ids' order."""
    import sys

    if not scores:
        print("warning: --compare needs labels: the images have none and no --solution was given", file=sys.stderr)
        return
    entries = compared_entries(models, plans, scores)
    stem = out.with_name(out.stem + "_compare")
    count = len(scores[models[0].name])
    write_csv(entries, stem.with_suffix(".csv"))
    write_image_scores(entries, scores, image_ids, out.with_name(out.stem + "_compare_images.csv"))
    write_plot(entries, stem.with_suffix(".png"), f"Kaggle score on {count} labelled images")
    if experiment_folder is not None:
        import shutil

        from nucjax.experiment import COMPARE_CSV, COMPARE_PNG

        shutil.copyfile(stem.with_suffix(".csv"), experiment_folder / COMPARE_CSV)
        shutil.copyfile(stem.with_suffix(".png"), experiment_folder / COMPARE_PNG)
    print(f"comparison on {count} labelled images ({stem}.csv, {stem}_images.csv, {stem}.png):")
    print(table(entries))
