"""Draws docs/images/nuclei.png, the picture at the top of the README: one
synthetic image of each kind nucjax generates, every nucleus outlined.

    python docs/picture.py
"""

from __future__ import annotations

from pathlib import Path

from nucjax.data.split import image_kind
from nucjax.data.synthetic import SyntheticConfig, generate
from nucjax.pictures import TRUTH_COLOUR, contour_overlay, side_by_side, write_overlay


def main() -> None:
    firsts = {}
    for sample in generate(SyntheticConfig(n_images=40, seed=3)):
        firsts.setdefault(image_kind(sample.image), sample)
    panels = [contour_overlay(s.image[..., :3], s.labels, TRUTH_COLOUR) for s in firsts.values()]
    write_overlay(Path(__file__).parent / "images" / "nuclei.png", side_by_side(panels, height=220))


if __name__ == "__main__":
    main()
