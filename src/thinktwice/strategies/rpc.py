"""RPC: Reasoning-Pruning Perplexity Consistency (Zhou et al., arXiv 2502.00511; METHODS §4.4).

``n`` samples, then the algorithm of :mod:`thinktwice.signals.rpc` (shared with the ``rpc``
signal, and matching the authors' released prune masks):

1. Path probability ``p_i = exp(mean token logprob)`` of every sample.
2. Reasoning pruning: a two-component Weibull mixture fitted to ``{p_i}`` by L-BFGS-B; a path is
   dropped when its posterior of the low-mean component exceeds the high one's *and*
   ``p_i < mean(p)``. Pools that cannot support the fit (fewer than 3 samples, all ``p_i`` equal,
   a NaN/inf ``p_i``) are not pruned; the ``prune`` trace step says why.
3. Perplexity consistency: an answer's score is the sum of ``p_i`` over surviving paths with that
   answer, counting a repeated (completion text, ``p_i``) once; the argmax wins (the earliest
   answer on ties) and the confidence is its normalised score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.signals.rpc import no_pruning, path_probs, path_weights, reasoning_pruning
from thinktwice.signals.token_stats import mean_logprob
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import vote

__all__ = ["RPC"]


def _finite_or_none(x: float, digits: int = 6) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


@dataclass(frozen=True)
class RPC(BaseStrategy):
    """``n`` samples, Weibull-mixture pruning of low path probabilities, perplexity-weighted vote.

    ``prune=False`` skips the pruning (plain perplexity consistency); ``dedupe=False`` lets
    repeated completions count every time.
    """

    name: ClassVar[str] = "rpc"
    n: int = 16
    prune: bool = True
    dedupe: bool = True
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
        probs = path_probs([mean_logprob(c.sample.tokens) if c.sample.tokens else math.nan for c in cands])
        cands = [c.with_score("path-prob", float(x) if math.isfinite(x) else 0.0) for c, x in zip(cands, probs)]
        pruning = reasoning_pruning(probs) if self.prune else no_pruning(len(cands), "pruning off")
        weights = path_weights([c.sample.text for c in cands], probs, pruning.keep, self.dedupe)
        v = vote(cands, ctx.query.answers, weights.tolist())
        ctx.note("prune", path_probs=[_finite_or_none(float(x)) for x in probs],
                 kept=[bool(k) for k in pruning.keep], **pruning.detail())
        ctx.note("vote", tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)
