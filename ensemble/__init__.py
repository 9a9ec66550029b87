"""Ensembles of checkpoints: python -m ensemble.predict.

members.py chooses the candidates (the best trials of a search, the
epochs of one trial, or explicit folders), images.py the images to
calibrate on and to predict, selection.py chooses members greedily and
calibrates each combination (the models, their maps and the combination
itself are nucjax.segmenter's and nucjax.combine's), report.py writes the
--compare table and plot, predict.py is the command.
"""
