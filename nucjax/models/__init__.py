"""Models that turn an image into nucleus probabilities: the standard and multi-arm U-Nets (unet.py) and their
memory estimate (memory.py); and the report's threshold model (threshold.py)."""
