"""nucjax: nucleus instance segmentation at scale.

The data flows forward through one module per stage:
``data`` (DSB2018 and synthetic images) -> ``preprocess`` -> ``inputs`` ->
``models`` -> ``train`` -> ``inference`` -> ``postprocess`` -> ``metrics``
(Kaggle score) -> ``submission`` (RLE CSVs). Commands: ``python -m
nucjax.train``, ``nucjax.predict``, ``nucjax.baseline``, ``nucjax.score``,
``nucjax.explore``; the search is ``python -m search.run``.
"""

__version__ = "0.1.0"
