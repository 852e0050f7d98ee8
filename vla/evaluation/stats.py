"""Confidence intervals for success rates.

A success rate from a few dozen episodes is noisy; every rate ``vla eval`` reports carries a Wilson
score interval, which stays inside [0, 1] and behaves at 0/n and n/n, unlike the normal approximation.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of ``successes`` out of ``trials``.

    ``wilson_interval(8, 10)`` is about ``(0.490, 0.943)``. With no trials the rate is unknown and
    the interval is the whole range ``(0.0, 1.0)``.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    center = (rate + z2 / (2 * trials)) / denominator
    half_width = z / denominator * math.sqrt(rate * (1.0 - rate) / trials + z2 / (4 * trials * trials))
    return max(0.0, center - half_width), min(1.0, center + half_width)
