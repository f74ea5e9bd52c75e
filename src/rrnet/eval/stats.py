"""Confidence intervals for success rates measured on a few dozen to a few hundred images.

Wilson's score interval is used for proportions because, unlike the normal approximation, it
stays inside [0, 1] and behaves at 0/n and n/n; the percentile bootstrap covers other means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from rrnet.errors import RRNetError


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise RRNetError(f"confidence must be strictly between 0 and 1, got {confidence}")
    return confidence


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile, e.g. 1.95996 for 95 %."""
    return NormalDist().inv_cdf(0.5 + _check_confidence(confidence) / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for successes/n; with no trials nothing is known, so (0, 1)."""
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise RRNetError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the mean of `values`; the same seed gives the same answer."""
    _check_confidence(confidence)
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise RRNetError("cannot bootstrap an interval from no values")
    if n_resamples < 1:
        raise RRNetError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(n_resamples, data.size))
    means = data[indices].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(low), float(high))
