"""Ray Tune search over U-Nets (python -m search.run): spaces.py (what varies), trainable.py (one trial),
tuner.py (the Tuner and the experiment record), refit.py (the group k-fold refit), run.py (the command)."""
