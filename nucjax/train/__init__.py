"""Training U-Nets: the loop (loop.py), losses, checkpoints, the prediction
film, and the command line (python -m nucjax.train)."""
