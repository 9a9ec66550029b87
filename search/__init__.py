"""Ray Tune search over U-Nets (python -m search.run): not built yet."""
