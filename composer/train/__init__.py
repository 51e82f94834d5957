"""Training: configuration, trainer, checkpoints, metrics logging."""
