"""Ray Tune search over U-Nets (python -m search.run): spaces.py (what varies), trainable.py (one trial),
experiment.py (the Tuner and the experiment record), run.py (the command)."""
