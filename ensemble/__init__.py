"""Ensembles of checkpoints: python -m ensemble.predict.

members.py chooses checkpoints (the best trials of a search, the epochs of
one trial, or explicit folders), images.py the images to calibrate on and
to predict, predictions.py loads the members, predicts an image with each
and selects them greedily, combine.py merges their maps (intersect, vote,
mean), report.py writes the --compare table and plot, predict.py is the
command.
"""
