"""python -m nucjax.explore: the reference report's look at the data, as PNG plots and a summary.

Counts per image kind, a scatter of image sizes, a box plot of mean grey
intensity per kind with the 150 inversion threshold drawn, histograms of
nuclei per image and of nucleus area. With --sweep, the simple model's
Kaggle and full-mask scores against its threshold, as the report plotted.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucjax.cli import data_command_parser, fail, load_data


@dataclass(frozen=True)
class ImageStats:
    image_id: str
    kind: str
    height: int
    width: int
    mean_grey: float
    nucleus_areas: tuple[int, ...]  # empty when the image has no labels


def image_stats(sample) -> ImageStats:
    from nucjax.data import image_kind
    from nucjax.preprocess import to_grey

    areas = () if sample.labels is None else tuple(int(a) for a in np.bincount(sample.labels.ravel())[1:] if a)
    h, w = sample.image.shape[:2]
    return ImageStats(sample.image_id, image_kind(sample.image), h, w, float(to_grey(sample.image).mean()), areas)


def summary_text(stats: list[ImageStats]) -> str:
    """A short plain-text summary of the dataset."""
    from nucjax.data import KINDS

    kinds = Counter(s.kind for s in stats)
    sizes = Counter(f"{s.height}x{s.width}" for s in stats)
    labelled = [s for s in stats if s.nucleus_areas]
    lines = [f"images: {len(stats)}"]
    lines += [f"  {k}: {kinds.get(k, 0)} ({100 * kinds.get(k, 0) / len(stats):.1f}%)" for k in KINDS]
    lines.append("sizes (HxW): " + ", ".join(f"{size} x{n}" for size, n in sizes.most_common(6)))
    for k in KINDS:
        means = [s.mean_grey for s in stats if s.kind == k]
        if means:
            lines.append(f"mean grey of {k}: median {np.median(means):.1f}, range {min(means):.1f}-{max(means):.1f}")
    if labelled:
        counts = [len(s.nucleus_areas) for s in labelled]
        areas = np.concatenate([s.nucleus_areas for s in labelled])
        lines.append(f"nuclei: {int(sum(counts))} in {len(labelled)} labelled images; per image median {np.median(counts):.0f}, max {max(counts)}")
        lines.append(f"nucleus area (px): median {np.median(areas):.0f}, 5th pct {np.percentile(areas, 5):.0f}, 95th pct {np.percentile(areas, 95):.0f}")
    return "\n".join(lines) + "\n"


def write_plots(stats: list[ImageStats], out: Path) -> list[Path]:
    """Write the exploration plots as PNGs under out; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nucjax.data import KINDS
    from nucjax.preprocess import INVERT_MEAN

    written = []

    def save(fig, name):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    kinds = [k for k in KINDS if any(s.kind == k for s in stats)]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(kinds, [sum(s.kind == k for s in stats) for k in kinds], color="tab:blue")
    ax.set_ylabel("images")
    ax.set_title("Images per kind")
    save(fig, "kinds.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    for k in kinds:
        ax.scatter([s.width for s in stats if s.kind == k], [s.height for s in stats if s.kind == k], label=k, alpha=0.5, s=15)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes")
    ax.legend()
    save(fig, "sizes.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot([[s.mean_grey for s in stats if s.kind == k] for k in kinds], tick_labels=kinds)
    ax.axhline(INVERT_MEAN, color="tab:red", linestyle="--", label=f"inversion threshold {INVERT_MEAN:g}")
    ax.set_ylabel("mean grey intensity")
    ax.set_title("Mean intensity per kind")
    ax.legend()
    save(fig, "intensity.png")

    labelled = [s for s in stats if s.nucleus_areas]
    if labelled:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist([len(s.nucleus_areas) for s in labelled], bins=40, color="tab:green")
        ax.set_xlabel("nuclei per image")
        ax.set_ylabel("images")
        ax.set_title("Nuclei per image")
        save(fig, "nuclei_per_image.png")

        fig, ax = plt.subplots(figsize=(5, 3.5))
        areas = np.concatenate([s.nucleus_areas for s in labelled])
        ax.hist(areas, bins=np.logspace(0, np.log10(max(areas.max(), 10)), 50), color="tab:purple")
        ax.set_xscale("log")
        ax.set_xlabel("nucleus area (px)")
        ax.set_ylabel("nuclei")
        ax.set_title("Nucleus area")
        save(fig, "nucleus_area.png")
    return written


def write_sweep_plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.thresholds, result.kaggle, label=f"Kaggle metric (best {result.best_by_kaggle:g})")
    ax.plot(result.thresholds, result.full_mask, label=f"full-mask score (best {result.best_by_full_mask:g})")
    ax.set_xlabel("threshold on the preprocessed image (0..255)")
    ax.set_ylabel("mean score")
    ax.set_title("Simple model: score against threshold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = data_command_parser("nucjax.explore", __doc__)
    parser.add_argument("--out", type=Path, default=Path("explore"), help="folder for plots and summary.txt (default: %(default)s)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the simple model's threshold on the labelled images")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from nucjax.models.threshold import sweep_thresholds

    dataset = load_data(args.data, args.strict)
    stats = [image_stats(s) for s in dataset.samples]
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_plots(stats, args.out)
    summary = summary_text(stats)
    if args.sweep:
        labelled = [s for s in dataset.samples if s.labels is not None]
        if not labelled:
            fail("--sweep needs labelled images (Kaggle layout with masks/)")
        result = sweep_thresholds([s.image for s in labelled], [s.labels for s in labelled])
        write_sweep_plot(result, args.out / "threshold_sweep.png")
        written.append(args.out / "threshold_sweep.png")
        summary += (f"simple model, best threshold by Kaggle metric: {result.best_by_kaggle:g} ({max(result.kaggle):.4f}); "
                    f"by full-mask score: {result.best_by_full_mask:g} ({max(result.full_mask):.4f})\n")
    (args.out / "summary.txt").write_text(summary)
    print(summary, end="")
    print(f"wrote {', '.join(p.name for p in written)} and summary.txt to {args.out}")


if __name__ == "__main__":
    main()
