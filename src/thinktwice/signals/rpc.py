"""RPC core: reasoning pruning and perplexity consistency (Zhou et al., arXiv 2502.00511; METHODS §4.4).

The one implementation behind the ``rpc`` signal (signals/consistency.py) and the ``rpc``
strategy. It follows the authors' released evaluator (WNJXYK/RPC, ``compute_rpc.py``) step for
step, so that its prune masks are the released code's:

1. Path probability ``p_i = exp(mean token logprob)``.
2. A two-component Weibull mixture ``w·W(k1, λ1) + (1-w)·W(k2, λ2)`` is fitted to all ``p_i`` by
   minimising the negative log-likelihood with scipy's L-BFGS-B at scipy's defaults
   (finite-difference gradient), from ``w=0.5, k1=1, λ1=1, k2=1.5, λ2=2`` with ``w ∈ [0.2, 0.8]``
   and shapes and scales ``>= 0.01``. The optimiser's last point is used whether or not it
   reports convergence, as in the released code (the trace says which).
3. The component with the larger mean is "high" (the first one when the means tie). Path ``i``
   is pruned when its posterior membership of "high" is below that of "low" **and**
   ``p_i < mean(p)``.
4. Perplexity consistency: an answer scores the sum of ``p_i`` over its surviving paths, each
   distinct (completion text, ``p_i``) pair counted once.

Deliberate departures, where the released code would fit a meaningless model or return NaN:
nothing is pruned (and :attr:`Pruning.fallback` says why) when there are fewer than 3 paths, all
``p_i`` are equal, any ``p_i`` is NaN, infinite or 0, or the fitted mixture is not finite. A
path without a finite probability casts no vote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import gamma

__all__ = [
    "MIN_PATHS",
    "Pruning",
    "WeibullMixture",
    "consistency_scores",
    "fit_weibull_mixture",
    "no_pruning",
    "path_probs",
    "path_weights",
    "prune_paths",
    "reasoning_pruning",
]

MIN_PATHS = 3  # a 5-parameter mixture on fewer points is noise (the released code fits it anyway)
_INIT = (0.5, 1.0, 1.0, 1.5, 2.0)  # w, k1, λ1, k2, λ2 as in the released code
_BOUNDS = ((0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None))
_EQUAL_RTOL = 1e-12  # p values closer than this (relative) carry no information to fit


def _weibull_pdf(x: np.ndarray, k: float, lam: float) -> np.ndarray:
    # written as in the released code so the objective, and so the optimiser's path, agree bit for bit
    return (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))


def _nll(params: np.ndarray, x: np.ndarray) -> float:
    w, k1, lam1, k2, lam2 = params
    dens = w * _weibull_pdf(x, k1, lam1) + (1 - w) * _weibull_pdf(x, k2, lam2)
    return -np.sum(np.log(dens))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class WeibullMixture:
    """``w·W(k1, λ1) + (1-w)·W(k2, λ2)``; ``converged`` is the optimiser's own verdict."""

    w: float
    k1: float
    lam1: float
    k2: float
    lam2: float
    converged: bool = True

    def means(self) -> tuple[float, float]:
        return float(self.lam1 * gamma(1 + 1 / self.k1)), float(self.lam2 * gamma(1 + 1 / self.k2))

    def high_first(self) -> WeibullMixture:
        """The same mixture with the larger-mean component first (unchanged when the means tie)."""
        m1, m2 = self.means()
        if m1 < m2:
            return WeibullMixture(1 - self.w, self.k2, self.lam2, self.k1, self.lam1, self.converged)
        return self

    def posterior_first(self, x: np.ndarray) -> np.ndarray:
        """Posterior membership of component 1 at ``x`` (NaN where both densities vanish)."""
        with np.errstate(all="ignore"):
            d1 = self.w * _weibull_pdf(x, self.k1, self.lam1)
            d2 = (1 - self.w) * _weibull_pdf(x, self.k2, self.lam2)
            return d1 / (d1 + d2)  # type: ignore[no-any-return]

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite([self.w, self.k1, self.lam1, self.k2, self.lam2, *self.means()])))


def _degenerate(p: np.ndarray) -> str | None:
    """Why ``p`` cannot support a mixture fit, or None."""
    if p.size < MIN_PATHS:
        return f"fewer than {MIN_PATHS} paths"
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        return "a path probability is NaN, infinite or 0"
    if float(p.max() - p.min()) <= _EQUAL_RTOL * float(p.max()):
        return "all path probabilities are equal"
    return None


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """L-BFGS-B's 5x5 linear algebra runs slower threaded than alone: on a busy 2-core machine a fit
    took 100-300 ms with OpenBLAS's 2 threads and 10-13 ms with 1. The limit needs threadpoolctl
    (optional: without it the fit is the same, only slower)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def fit_weibull_mixture(p: Sequence[float] | np.ndarray) -> WeibullMixture | None:
    """Maximum-likelihood two-Weibull mixture of ``p`` (L-BFGS-B, as released), components as fitted.

    None when ``p`` cannot support a fit (see :func:`reasoning_pruning`) or the fit is not finite.
    """
    x = np.asarray(p, dtype=np.float64)
    if _degenerate(x) is not None:
        return None
    with np.errstate(all="ignore"), _one_blas_thread():
        res = minimize(_nll, np.array(_INIT), args=(x,), method="L-BFGS-B", bounds=_BOUNDS)
    m = WeibullMixture(*(float(v) for v in res.x), converged=bool(res.success))
    with np.errstate(all="ignore"):
        ok = m.is_finite() and np.isfinite(_nll(np.asarray(res.x), x))
    return m if ok else None


@dataclass(frozen=True, slots=True)
class Pruning:
    """Outcome of reasoning pruning: the kept mask, the mixture (high component first) and, when
    nothing could be pruned, ``fallback`` saying why."""

    keep: np.ndarray
    fit: WeibullMixture | None
    fallback: str | None
    threshold: float

    @property
    def pruned(self) -> int:
        return int((~self.keep).sum())

    def detail(self) -> dict[str, Any]:
        """A JSON-friendly summary for a strategy's trace."""
        out: dict[str, Any] = {"pruned": self.pruned, "fallback": self.fallback}
        if self.fit is not None:
            f = self.fit
            out["fit"] = {"w_high": round(f.w, 6), "k_high": round(f.k1, 6), "lam_high": round(f.lam1, 6),
                          "k_low": round(f.k2, 6), "lam_low": round(f.lam2, 6), "converged": f.converged}
            out["threshold"] = round(self.threshold, 6)
        return out


def no_pruning(n: int, reason: str) -> Pruning:
    """Keep all ``n`` paths, saying why."""
    return Pruning(np.ones(n, dtype=bool), None, reason, float("nan"))


def reasoning_pruning(p: Sequence[float] | np.ndarray) -> Pruning:
    """RPC's reasoning pruning of path probabilities ``p``; never raises on hostile input.

    Falls back to keeping every path when there are fewer than 3, all are equal, any is NaN,
    infinite or 0, or the fit is not finite.
    """
    x = np.asarray(p, dtype=np.float64).reshape(-1)
    reason = _degenerate(x)
    if reason is not None:
        return no_pruning(x.size, reason)
    raw = fit_weibull_mixture(x)
    if raw is None:
        return no_pruning(x.size, "the mixture fit is not finite")
    fit = raw.high_first()
    high = fit.posterior_first(x)
    mean = float(np.mean(x))
    drop = (high < 1 - high) & (x < mean)  # NaN posteriors compare False: kept, as released
    return Pruning(~drop, fit, None, mean)


def prune_paths(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the paths reasoning pruning keeps (all of them when it falls back)."""
    return reasoning_pruning(p).keep


def path_probs(mean_logprobs: Sequence[float] | np.ndarray) -> np.ndarray:
    """``exp(mean logprob)`` per path (NaN stays NaN)."""
    with np.errstate(all="ignore"):
        return np.exp(np.asarray(mean_logprobs, dtype=np.float64))


def path_weights(
    texts: Sequence[str], p: Sequence[float] | np.ndarray, keep: np.ndarray, dedupe: bool = True
) -> np.ndarray:
    """Each path's vote in perplexity consistency: ``p_i`` for a kept path with a finite ``p_i``
    (only the first of a repeated (text, ``p_i``) pair when ``dedupe``), else 0."""
    x = np.asarray(p, dtype=np.float64)
    if not (len(texts) == x.size == len(keep)):
        raise ValueError("texts, probabilities and mask differ in length")
    out = np.zeros(x.size)
    seen: set[tuple[str, float]] = set()
    for i, (t, v) in enumerate(zip(texts, x.tolist())):
        if not keep[i] or not np.isfinite(v):
            continue
        if dedupe:
            if (t, v) in seen:
                continue
            seen.add((t, v))
        out[i] = v
    return out


def consistency_scores(classes: Sequence[Sequence[int]], weights: Sequence[float] | np.ndarray) -> list[float]:
    """Per path, the normalised perplexity-consistency score of its answer class (``classes`` hold
    path indices); paths in no class, or all paths when every class scores 0, get 0."""
    w = np.asarray(weights, dtype=np.float64)
    sums = [float(sum(w[i] for i in members)) for members in classes]
    total = sum(sums)
    out = [0.0] * w.size
    for members, s in zip(classes, sums):
        for i in members:
            out[i] = s / total if total > 0 else 0.0
    return out
