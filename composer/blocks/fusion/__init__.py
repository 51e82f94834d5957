"""Fusion operators: baselines and the paper operators (one module per family)."""
