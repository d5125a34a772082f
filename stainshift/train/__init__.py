"""Training translation models: the epoch loop, checkpoints and optional DDP."""
