"""RPC: Reasoning-Pruning Perplexity Consistency (Zhou et al., arXiv 2502.00511; METHODS §4.4).

1. Path probability ``p_i = exp(mean token logprob)`` of every sample.
2. Reasoning pruning: fit a two-component Weibull mixture to ``{p_i}`` by maximum likelihood
   (initialised ``w=0.5, k1=1, λ1=1, k2=1.5, λ2=2``; ``w`` kept in [0.2, 0.8], shapes and scales
   >= 0.01, as in the released code); the component with the larger mean is "high". A path is
   dropped when its posterior of "low" exceeds that of "high" *and* ``p_i < mean(p)``.
3. Perplexity consistency: an answer's score is the sum of ``p_i`` over surviving paths with that
   answer, counting identical completion texts once; the argmax wins and the confidence is its
   normalised score.

The mixture is fitted by EM here (the released code calls a generic optimiser): each M-step
solves the weighted Weibull likelihood equation for the shape by bisection, which is monotone,
so the fit is deterministic and needs only numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.signals.token_stats import path_prob
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import vote

__all__ = ["RPC", "WeibullMixture", "fit_weibull_mixture", "prune_paths"]


@dataclass(frozen=True, slots=True)
class WeibullMixture:
    """Weight ``w`` of component 1 and (shape, scale) of each component."""

    w: float
    k1: float
    lam1: float
    k2: float
    lam2: float

    def means(self) -> tuple[float, float]:
        return (self.lam1 * math.gamma(1 + 1 / self.k1), self.lam2 * math.gamma(1 + 1 / self.k2))

    def component_densities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted densities ``w·f1(x)`` and ``(1-w)·f2(x)``."""
        return self.w * _weibull_pdf(x, self.k1, self.lam1), (1 - self.w) * _weibull_pdf(x, self.k2, self.lam2)


def _weibull_pdf(x: np.ndarray, k: float, lam: float) -> np.ndarray:
    z = x / lam
    return (k / lam) * z ** (k - 1) * np.exp(-(z**k))


def _weighted_weibull_mle(x: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """Shape and scale maximising ``Σ r_i log f(x_i)``; the shape solves
    ``Σ r x^k ln x / Σ r x^k - 1/k - Σ r ln x / Σ r = 0`` (increasing in k)."""
    rs = r.sum()
    if rs <= 1e-12:
        return 1.0, 1.0
    lx = np.log(x)
    mean_lx = float((r * lx).sum() / rs)

    def g(k: float) -> float:
        xk = x**k
        return float((r * xk * lx).sum() / (r * xk).sum()) - 1.0 / k - mean_lx

    lo, hi = math.log(0.01), math.log(200.0)
    if g(math.exp(hi)) < 0:
        k = math.exp(hi)
    elif g(math.exp(lo)) > 0:
        k = math.exp(lo)
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if g(math.exp(mid)) < 0:
                lo = mid
            else:
                hi = mid
        k = math.exp((lo + hi) / 2)
    lam = float(((r * x**k).sum() / rs) ** (1 / k))
    return max(k, 0.01), max(lam, 0.01)


def fit_weibull_mixture(p: np.ndarray, iters: int = 100) -> WeibullMixture:
    """EM fit of a two-component Weibull mixture to values in (0, 1] (from the released init)."""
    x = np.clip(np.asarray(p, dtype=np.float64), 1e-12, None)
    m = WeibullMixture(0.5, 1.0, 1.0, 1.5, 2.0)
    for _ in range(iters):
        d1, d2 = m.component_densities(x)
        tot = d1 + d2
        tot = np.where(tot > 0, tot, 1e-300)
        r1 = d1 / tot
        w = float(np.clip(r1.mean(), 0.2, 0.8))
        k1, l1 = _weighted_weibull_mle(x, r1)
        k2, l2 = _weighted_weibull_mle(x, 1 - r1)
        new = WeibullMixture(w, k1, l1, k2, l2)
        if max(abs(a - b) for a, b in zip(
                (new.w, new.k1, new.lam1, new.k2, new.lam2), (m.w, m.k1, m.lam1, m.k2, m.lam2))) < 1e-8:
            m = new
            break
        m = new
    return m


def prune_paths(p: np.ndarray) -> np.ndarray:
    """Boolean mask of paths kept by RPC's reasoning pruning."""
    p = np.asarray(p, dtype=np.float64)
    if p.size < 3 or float(p.max() - p.min()) < 1e-9:
        return np.ones(p.size, dtype=bool)
    m = fit_weibull_mixture(p)
    d1, d2 = m.component_densities(np.clip(p, 1e-12, None))
    mean1, mean2 = m.means()
    high, low = (d1, d2) if mean1 >= mean2 else (d2, d1)
    drop = (low > high) & (p < p.mean())
    return ~drop


@dataclass(frozen=True)
class RPC(BaseStrategy):
    """``n`` samples, Weibull-mixture pruning of low path probabilities, perplexity-weighted vote."""

    name: ClassVar[str] = "rpc"
    n: int = 16
    prune: bool = True
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch < 1:
            raise ConfigError(f"rpc needs n and batch >= 1, got {self.n}, {self.batch}")

    async def decide(self, ctx: RunContext) -> Verdict:
        if not ctx.meter.capabilities.logprobs:
            raise CapabilityError(f"rpc needs token logprobs; backend {ctx.meter.name!r} does not return them")
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens, logprobs=True)
        cands, short = await draw(ctx, self.n, params, self.batch)
        probs = np.array([path_prob(c.sample.tokens) if c.sample.tokens else math.nan for c in cands])
        probs = np.nan_to_num(probs, nan=0.0)
        cands = [c.with_score("path-prob", float(x)) for c, x in zip(cands, probs)]
        keep = prune_paths(probs) if self.prune else np.ones(len(cands), dtype=bool)
        seen: set[str] = set()
        weights = []
        for c, x, k in zip(cands, probs, keep):
            dup = c.sample.text in seen
            seen.add(c.sample.text)
            weights.append(float(x) if k and not dup else 0.0)
        v = vote(cands, ctx.query.answers, weights)
        ctx.note("prune", path_probs=[round(float(x), 6) for x in probs], kept=[bool(k) for k in keep])
        ctx.note("vote", tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)
