"""Ensembles of checkpoints: python -m ensemble.predict.

members.py chooses checkpoints (the best trials of a search, the epochs of
one trial, or explicit folders), predictions.py loads them and predicts an
image with each, combine.py merges their maps (intersect, vote, mean),
report.py writes the --compare table and plot, predict.py is the command.
"""
