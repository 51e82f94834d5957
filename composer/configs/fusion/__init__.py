"""Fusion operator configs: baselines and the paper operators (one module per family)."""
