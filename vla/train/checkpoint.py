"""The old import path of :mod:`vla.checkpoint`, kept only for ``vla/benchmark.py`` (which reads
``latest_checkpoint`` from here); new code imports :mod:`vla.checkpoint`. Remove this module once
``vla/benchmark.py`` does too.
"""

from vla.checkpoint import latest_checkpoint

__all__ = ["latest_checkpoint"]
