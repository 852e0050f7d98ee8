"""`vla train`: the training loop, run set-up, normalization statistics and DDP (see vla.train.loop).

Checkpoints are written in the format of :mod:`vla.checkpoint`, which sits below this package.
"""
