"""nucjax: nucleus instance segmentation at scale.

From Python:

    from nucjax import Segmenter, read_image
    segmenter = Segmenter.load("runs/train")  # a checkpoint, run, experiment or list of checkpoints
    labels = segmenter.segment(read_image("cells.png"))  # (H, W) int32, one id per nucleus

The data flows forward through one module per stage:
``data`` (DSB2018 and synthetic images, splits) -> ``preprocess`` ->
``scale`` -> ``inputs`` -> ``models`` -> ``train`` -> ``inference`` ->
``segmenter`` (checkpoints to maps, ensembles, folders) -> ``postprocess``
-> ``metrics`` (Kaggle score) -> ``submission`` (RLE CSVs); ``experiment``
is a search's record. Commands: ``python -m nucjax.train``,
``nucjax.predict``, ``nucjax.baseline``, ``nucjax.score``,
``nucjax.explore``; the search is ``python -m search.run``, ensembles
``python -m ensemble.predict``.
"""

__version__ = "0.1.0"

#: The public API: name -> module. Imported on first use, so that the
#: commands' --help stays instant.
_PUBLIC = {
    "Segmenter": "nucjax.segmenter",
    "segment_folder": "nucjax.segmenter",
    "folder_images": "nucjax.segmenter",
    "ImageResult": "nucjax.segmenter",
    "read_image": "nucjax.data",
    "find_samples": "nucjax.data",
    "load_dataset": "nucjax.data",
    "image_score": "nucjax.metrics",
    "write_submission": "nucjax.submission",
    "ExperimentConfig": "nucjax.config",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'nucjax' has no attribute '{name}'")
