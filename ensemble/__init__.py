"""Ensembles of checkpoints (python -m ensemble.predict): not built yet."""
