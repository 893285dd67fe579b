"""Pool metrics: unbiased pass@k, maj@k, coverage, and the two-level bootstrap for curves.

pass@k follows Chen et al., arXiv 2107.03374; the curve intervals follow METHODS §1.3: resample
problems, then one permutation per resampled problem, percentile interval. Paired differences
between strategies use the same permutations for both (common random numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from thinktwice.errors import ConfigError

__all__ = [
    "coverage_at_k",
    "maj_at_k",
    "paired_difference",
    "pass_at_k",
    "pass_at_k_curve",
    "two_level_bootstrap",
]


def pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k ``1 - C(n-c, k)/C(n, k)`` per problem (n samples, c correct), as floats.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (Chen et al., arXiv 2107.03374), in log space
    so that large n neither overflows nor underflows.

    >>> float(pass_at_k(4, 1, 2)[0])
    0.5
    """
    return pass_at_k_curve(np.atleast_1d(n), np.atleast_1d(c), [k])[:, 0]


def pass_at_k_curve(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray,
                    ks: Sequence[int]) -> np.ndarray:
    """Per-problem pass@k for every k in ``ks``: a (P, len(ks)) array, vectorised.

    With ``S_k(m) = sum_{i=k+1}^{m} log(1 - k/i)``, the ratio ``C(n-c, k)/C(n, k)`` is
    ``exp(S_k(n) - S_k(n-c))`` when ``n - c >= k``, and 0 otherwise (pass@k = 1).
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c_arr = np.atleast_1d(np.asarray(c, dtype=np.int64))
    k_arr = np.asarray(list(ks), dtype=np.int64)
    if k_arr.size and k_arr.min() < 1:
        raise ConfigError(f"pass@k needs k >= 1, got {int(k_arr.min())}")
    if n_arr.shape != c_arr.shape:
        raise ConfigError("pass@k: n and c must have the same shape")
    if n_arr.size and k_arr.size and np.any(n_arr < k_arr.max()):
        raise ConfigError(f"pass@{int(k_arr.max())} needs at least {int(k_arr.max())} samples per problem; "
                          f"some have {int(n_arr.min())}")
    if np.any((c_arr < 0) | (c_arr > n_arr)):
        raise ConfigError("pass@k: correct counts must lie in [0, n]")
    m = int(n_arr.max()) if n_arr.size else 0
    i = np.arange(m + 1, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(i > k_arr[:, None], np.log1p(-k_arr[:, None] / np.maximum(i, 1)), 0.0)
    S = np.cumsum(terms, axis=1)  # (K, m + 1): S[k, j] = S_k(j), 0 for j <= k
    wrong = n_arr - c_arr
    ratio = np.exp(S[:, n_arr] - S[:, wrong])  # (K, P)
    ratio = np.where(wrong[None, :] < k_arr[:, None], 0.0, ratio)
    return (1.0 - ratio).T


def coverage_at_k(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean pass@k over problems: the oracle-selection ceiling for any selector of k samples."""
    return float(pass_at_k(np.asarray(n), np.asarray(c), k).mean())


def maj_at_k(correct: np.ndarray) -> np.ndarray:
    """maj@k per k from a (B, P, K) array of majority-vote correctness (see ``curves.replay``).

    Ties in the vote are broken by earliest appearance in each random permutation, so averaged
    over permutations a t-way tie earns ``1/t`` on average (METHODS §1.2's fractional credit).
    """
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 3:
        raise ConfigError(f"maj_at_k expects a (B, P, K) array, got shape {c.shape}")
    return c.mean(axis=(0, 1))


def two_level_bootstrap(
    values: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of a (B, P, K) array of per-permutation, per-problem values.

    Each bootstrap draw resamples the P problems with replacement and, for each drawn problem,
    one of the B permutations (METHODS §1.3); the statistic is the mean over drawn problems.
    Returns (lo, hi), each of shape (K,).
    """
    v = np.asarray(values)
    if v.ndim != 3:
        raise ConfigError(f"two_level_bootstrap expects a (B, P, K) array, got shape {v.shape}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    b, p, k = v.shape
    if b == 0 or p == 0:
        nan = np.full(k, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    # gather the narrowest exact type: 0/1 and -1/0/1 arrays move 1 byte per element
    if v.dtype == bool:
        v, acc = v.view(np.uint8), np.int32
    elif np.issubdtype(v.dtype, np.integer) and v.min() >= -128 and v.max() <= 127:
        v, acc = v.astype(np.int8), np.int32
    else:  # fractions (pass@k): float32 is plenty for a percentile band, summed in float64
        v, acc = v.astype(np.float32, copy=False), np.float64
    flat = np.ascontiguousarray(v.reshape(b * p, k))  # row = perm * P + problem
    boots = np.empty((n_boot, k), dtype=np.float64)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        pi = rng.integers(0, p, size=(m, p))
        bi = rng.integers(0, b, size=(m, p))
        rows = bi * p + pi
        boots[start:start + m] = flat[rows].sum(axis=1, dtype=acc) / p
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return lo, hi


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean difference ``a - b`` per column with its two-level bootstrap interval.

    ``a`` and ``b`` are (B, P, K) arrays computed on the *same* permutations (common random
    numbers), so the interval reflects only how the strategies differ, not permutation noise.
    Returns (mean, lo, hi), each of shape (K,).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ConfigError(f"paired_difference needs equal shapes, got {a.shape} and {b.shape}")
    d = a.astype(np.int8) - b.astype(np.int8) if (a.dtype == bool and b.dtype == bool) else (
        a.astype(np.float64) - b.astype(np.float64))
    lo, hi = two_level_bootstrap(d, n_boot=n_boot, seed=seed, level=level)
    return d.mean(axis=(0, 1)).astype(np.float64), lo, hi
