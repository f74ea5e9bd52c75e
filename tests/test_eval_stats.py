"""Wilson and bootstrap intervals against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rrnet.errors import RRNetError
from rrnet.eval.stats import bootstrap_interval, wilson_interval


def test_wilson_known_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)


def test_wilson_extremes_stay_in_unit_interval():
    # at 0/n the upper bound is z^2 / (n + z^2) = 3.8415 / 13.8415
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-3)


def test_wilson_no_trials_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_symmetry_and_width():
    low3, high3 = wilson_interval(3, 10)
    low7, high7 = wilson_interval(7, 10)
    assert low3 == pytest.approx(1 - high7) and high3 == pytest.approx(1 - low7)
    low99, high99 = wilson_interval(8, 10, confidence=0.99)
    low95, high95 = wilson_interval(8, 10)
    assert low99 < low95 and high99 > high95
    big_low, big_high = wilson_interval(800, 1000)
    assert big_high - big_low < high95 - low95


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(11, 10, 0.95), (-1, 10, 0.95), (1, -1, 0.95), (1, 10, 1.0), (1, 10, 0.0)],
)
def test_wilson_rejects_bad_input(successes, n, confidence):
    with pytest.raises(RRNetError):
        wilson_interval(successes, n, confidence)


def test_bootstrap_contains_mean_and_is_deterministic():
    values = np.random.default_rng(123).random(50)
    low, high = bootstrap_interval(values, seed=7)
    assert low < float(values.mean()) < high
    assert (low, high) == bootstrap_interval(list(values), seed=7)
    assert (low, high) != bootstrap_interval(values, seed=8)


def test_bootstrap_width_grows_with_confidence():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    low90, high90 = bootstrap_interval(values, confidence=0.90)
    low99, high99 = bootstrap_interval(values, confidence=0.99)
    assert low99 <= low90 < high90 <= high99
    assert 0.0 <= low99 and high99 <= 1.0


def test_bootstrap_constant_values():
    assert bootstrap_interval([0.25] * 8) == pytest.approx((0.25, 0.25))


def test_bootstrap_rejects_bad_input():
    with pytest.raises(RRNetError):
        bootstrap_interval([])
    with pytest.raises(RRNetError):
        bootstrap_interval([1.0, 2.0], n_resamples=0)
    with pytest.raises(RRNetError):
        bootstrap_interval([1.0, 2.0], confidence=1.5)
