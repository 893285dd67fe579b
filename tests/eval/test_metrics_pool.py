"""pass@k, maj@k and the two-level bootstrap on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import ConfigError
from thinktwice.eval.metrics import (
    coverage_at_k,
    maj_at_k,
    paired_difference,
    pass_at_k,
    pass_at_k_curve,
    two_level_bootstrap,
)


def test_pass_at_k_hand_cases_and_combinatorial_form() -> None:
    assert float(pass_at_k(4, 1, 2)[0]) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert float(pass_at_k(5, 0, 3)[0]) == 0.0
    assert float(pass_at_k(5, 5, 1)[0]) == 1.0
    assert float(pass_at_k(10, 8, 3)[0]) == 1.0  # fewer than k wrong samples: a correct one is always drawn
    for n, c, k in [(64, 7, 8), (20, 3, 5), (9, 4, 1)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert float(pass_at_k(n, c, k)[0]) == pytest.approx(exact, rel=1e-9)
    assert float(pass_at_k(9, 4, 1)[0]) == pytest.approx(4 / 9)  # pass@1 is the sample accuracy


def test_pass_at_k_vectorised_and_errors() -> None:
    per = pass_at_k_curve([4, 4], [1, 4], [1, 2, 4])
    assert per.shape == (2, 3)
    assert np.allclose(per[0], [0.25, 0.5, 1.0]) and np.allclose(per[1], 1.0)
    assert coverage_at_k([4, 4], [1, 0], 2) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="at least 5 samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ConfigError):
        pass_at_k(4, 5, 1)
    # large n: no overflow, and the log-space form matches the exact ratio
    big = float(pass_at_k(1000, 3, 500)[0])
    assert big == pytest.approx(1 - math.comb(997, 500) / math.comb(1000, 500), rel=1e-9)


def test_maj_at_k_is_the_mean_over_orders_and_problems() -> None:
    c = np.zeros((2, 3, 2), dtype=bool)
    c[0, :, 0] = True
    c[1, 0, 1] = True
    assert np.allclose(maj_at_k(c), [0.5, 1 / 6])
    with pytest.raises(ConfigError):
        maj_at_k(np.zeros((3, 3)))


def test_two_level_bootstrap_constant_and_spread() -> None:
    const = np.full((5, 30, 2), 0.4)
    lo, hi = two_level_bootstrap(const, n_boot=100)
    assert np.allclose(lo, 0.4) and np.allclose(hi, 0.4)
    rng = np.random.default_rng(0)
    v = rng.random((20, 200, 1)) < 0.6
    lo, hi = two_level_bootstrap(v, n_boot=500, seed=1)
    assert lo[0] < v.mean() < hi[0] and hi[0] - lo[0] < 0.2
    # permutation noise alone (every problem identical across orders) still gives a band
    noisy = np.broadcast_to(rng.random((20, 1, 1)) < 0.5, (20, 50, 1))
    lo2, hi2 = two_level_bootstrap(noisy, n_boot=300)
    assert hi2[0] > lo2[0]
    # seeded
    assert np.array_equal(two_level_bootstrap(v, n_boot=50, seed=3)[0], two_level_bootstrap(v, n_boot=50, seed=3)[0])


def test_paired_difference_uses_common_orders() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((10, 100, 3)) < 0.5
    mean, lo, hi = paired_difference(a, a)
    assert np.allclose(mean, 0) and np.allclose(lo, 0) and np.allclose(hi, 0)
    b = a.copy()
    b[:, :10, :] = ~b[:, :10, :]  # b differs from a on 10% of problems
    mean, lo, hi = paired_difference(a, b, n_boot=400)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    with pytest.raises(ConfigError):
        paired_difference(a, a[:, :5])
