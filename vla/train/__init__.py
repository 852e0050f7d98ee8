"""`vla train`: the training loop, checkpoints, normalization statistics and DDP (see vla.train.loop)."""
