"""nucjax: nucleus instance segmentation at scale.

The data flows forward through one module per stage:
``data`` (DSB2018 and synthetic images) -> ``preprocess`` -> ``models`` ->
``metrics`` (Kaggle score) -> ``submission`` (RLE CSVs). Commands:
``python -m nucjax.baseline``, ``nucjax.score``, ``nucjax.explore``.
"""

__version__ = "0.1.0"
