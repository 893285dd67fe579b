"""DeepConf: confidence-filtered, confidence-weighted voting, offline and online (Fu et al., arXiv
2508.15260; METHODS §2.2 and §6.5).

Token confidence ``C_t`` is the negative mean top-k logprob; a *group* confidence is its mean over
a sliding window of ``window`` tokens.

- ``deepconf-offline``: draw ``n`` traces, score each (``lowest`` group by default), keep the top
  ``eta`` share and vote weighted by the score.
- ``deepconf-online``: draw ``warm_up`` traces; the stopping threshold is the
  ``(100 - percentile)``-th percentile of their lowest-group confidences (keep-90% with the default
  90). Later traces are drawn in concurrent batches through the backend's ``monitor`` callback,
  which stops a trace as soon as its current window mean falls below the threshold: its remaining
  tokens are never generated, and only the tokens before the cut are billed. Cut traces cast no
  vote. After each batch the run stops when the leading answer holds ``consensus`` (0.95) of the
  vote weight, or at ``max_samples``.

Window: the paper's 2048 tokens. For short answers (the organism, GSM8K chains of ~100 tokens)
no window ever fills, so nothing is cut mid-way; set ``window`` to a fraction of the typical
trace length there (the adaptive benchmark uses 8). A trace shorter than the window is scored by
its whole mean, and one that ends below the threshold is discarded like a cut one. On a backend
without the ``monitor`` capability traces run to the end and are filtered afterwards (a warning
is logged and the trace says so): the vote is the same, the token savings are not.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.base import TokenMonitor
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.signals.token_stats import (
    DEEPCONF_K,
    DEEPCONF_WINDOW,
    deepconf_scores,
    group_confidences,
    token_confidence,
)
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import vote
from thinktwice.types import Candidate, SamplingParams, TokenStat

__all__ = ["DeepConfOffline", "DeepConfOnline", "WindowMonitor", "lowest_group_confidence"]

log = logging.getLogger(__name__)

_SCORES = ("mean", "tail", "bottom10", "lowest")


def lowest_group_confidence(c: Candidate, window: int, k: int = DEEPCONF_K) -> float:
    """Minimum sliding-window mean of token confidence (NaN for an empty trace)."""
    toks = c.sample.tokens
    if not toks:
        return math.nan
    g = group_confidences(toks, window, k)
    return float(g.min()) if g.size else math.nan


class WindowMonitor:
    """A per-call token monitor: stops sequence ``i`` once its last-``window`` mean confidence < threshold."""

    def __init__(self, threshold: float, window: int, k: int = DEEPCONF_K) -> None:
        self.threshold, self.window, self.k = threshold, window, k
        self._windows: dict[int, deque[float]] = {}
        self._sums: dict[int, float] = {}
        self.cut: dict[int, int] = {}

    def __call__(self, index: int, position: int, stat: TokenStat) -> bool:
        w = self._windows.setdefault(index, deque())
        c = token_confidence(stat, self.k)
        w.append(c)
        self._sums[index] = self._sums.get(index, 0.0) + c
        if len(w) > self.window:
            self._sums[index] -= w.popleft()
        if len(w) == self.window and self._sums[index] / self.window < self.threshold:
            self.cut[index] = position + 1
            return True
        return False


def _require_tokens(ctx: RunContext, name: str) -> None:
    caps = ctx.meter.capabilities
    if not caps.logprobs:
        raise CapabilityError(f"{name} needs token logprobs; backend {ctx.meter.name!r} does not return them")


@dataclass(frozen=True)
class DeepConfOffline(BaseStrategy):
    """Vote over the top-``eta`` traces by DeepConf score, weighted by that score."""

    name: ClassVar[str] = "deepconf-offline"
    n: int = 16
    score: str = "lowest"
    eta: float = 0.9
    window: int = DEEPCONF_WINDOW
    k: int = DEEPCONF_K
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.window < 1 or self.k < 1 or self.batch < 1:
            raise ConfigError("deepconf-offline needs n, window, k and batch >= 1")
        if self.score not in _SCORES:
            raise ConfigError(f"score must be one of {', '.join(_SCORES)}, got {self.score!r}")
        if not 0 < self.eta <= 1:
            raise ConfigError(f"eta must be in (0, 1], got {self.eta}")

    async def decide(self, ctx: RunContext) -> Verdict:
        _require_tokens(ctx, self.name)
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens, logprobs=True,
                                 top_logprobs=min(self.k, ctx.meter.capabilities.top_logprobs))
        cands, short = await draw(ctx, self.n, params, self.batch)
        scores = [deepconf_scores(c.sample.tokens, self.window, self.window, 0.1, self.k)[self.score]
                  if c.sample.tokens else math.nan for c in cands]
        cands = [c.with_score(f"deepconf-{self.score}", s) for c, s in zip(cands, scores)]
        finite = sorted((s for s in scores if math.isfinite(s)), reverse=True)
        keep = max(1, math.ceil(self.eta * len(finite))) if finite else 0
        cutoff = finite[keep - 1] if keep else math.inf
        weights = [s if math.isfinite(s) and s >= cutoff else 0.0 for s in scores]
        v = vote(cands, ctx.query.answers, [max(w, 0.0) for w in weights])
        ctx.note("filter", score=self.score, eta=self.eta, cutoff=cutoff, kept=sum(w > 0 for w in weights))
        ctx.note("vote", tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)


@dataclass(frozen=True)
class DeepConfOnline(BaseStrategy):
    """Warm-up traces set a confidence threshold; later traces are cut mid-generation below it."""

    name: ClassVar[str] = "deepconf-online"
    warm_up: int = 16
    percentile: float = 90.0
    window: int = DEEPCONF_WINDOW
    k: int = DEEPCONF_K
    max_samples: int = 40
    batch: int = 8
    consensus: float = 0.95
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.warm_up < 1 or self.max_samples < self.warm_up:
            raise ConfigError(f"need 1 <= warm_up <= max_samples, got {self.warm_up}, {self.max_samples}")
        if not 0 < self.percentile < 100:
            raise ConfigError(f"percentile must be in (0, 100), got {self.percentile}")
        if self.window < 1 or self.k < 1 or self.batch < 1:
            raise ConfigError("window, k and batch must be >= 1")
        if not 0.5 < self.consensus <= 1:
            raise ConfigError(f"consensus must be in (0.5, 1], got {self.consensus}")

    async def decide(self, ctx: RunContext) -> Verdict:
        _require_tokens(ctx, self.name)
        if not ctx.meter.capabilities.monitor:
            # still correct, but no tokens are saved mid-generation: say so in the log and the trace
            log.warning("backend %r cannot stop a trace mid-generation; deepconf-online filters "
                        "finished traces only", ctx.meter.name)
            ctx.note("no-monitor", detail="traces run to the end and are filtered afterwards")
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens, logprobs=True,
                                 top_logprobs=min(self.k, ctx.meter.capabilities.top_logprobs))
        fmt = ctx.query.answers
        warm, short = await draw(ctx, self.warm_up, params, self.warm_up)
        conf = [lowest_group_confidence(c, self.window, self.k) for c in warm]
        finite = [x for x in conf if math.isfinite(x)]
        if not finite:
            v = vote(warm, fmt)
            ctx.note("warm-up", samples=len(warm), threshold=None)
            return Verdict(v.answer, v.share, warm, v.representative,
                           stopped_because="budget" if short else "done", votes=v.tallies)
        threshold = float(np.percentile(finite, 100.0 - self.percentile))
        cands = [c.with_score("deepconf-lowest", x) for c, x in zip(warm, conf)]
        weights = [x if math.isfinite(x) and x >= threshold else 0.0 for x in conf]
        ctx.note("warm-up", samples=len(warm), threshold=round(threshold, 6),
                 kept=sum(w > 0 for w in weights))
        stopped = "budget" if short else "max-samples"
        while not short and len(cands) < self.max_samples:
            v = vote(cands, fmt, weights)
            if v.share is not None and v.share >= self.consensus:
                stopped = "converged"
                break
            k = min(self.batch, self.max_samples - len(cands))
            got, cut, short = await self._draw_monitored(ctx, params, k, threshold)
            for c, was_cut in zip(got, cut):
                x = lowest_group_confidence(c, self.window, self.k)
                cands.append(c.with_score("deepconf-lowest", x))
                keep = not was_cut and math.isfinite(x) and x >= threshold
                weights.append(x if keep else 0.0)
            ctx.note("batch", drew=len(got), cut=sum(cut),
                     tokens=[c.sample.usage.completion_tokens for c in got], samples=len(cands))
            if short:
                stopped = "budget"
        v = vote(cands, fmt, weights)
        if v.answer is None:  # every trace filtered: fall back to a plain vote rather than no answer
            v = vote(cands, fmt)
        ctx.note("stop", because=stopped, samples=len(cands), tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)

    async def _draw_monitored(
        self, ctx: RunContext, params: SamplingParams, n: int, threshold: float
    ) -> tuple[list[Candidate], list[bool], bool]:
        """``n`` traces in concurrent calls, each call with its own window monitor."""
        size = n if ctx.meter.capabilities.native_n else 1
        sizes = [min(size, n - i) for i in range(0, n, size)]
        monitors = [WindowMonitor(threshold, self.window, self.k) for _ in sizes]

        async def one(k: int, mon: TokenMonitor) -> list[Candidate] | None:
            try:
                return await ctx.sample(k, params, monitor=mon if ctx.meter.capabilities.monitor else None)
            except BudgetExhausted:
                return None

        results = await asyncio.gather(*(one(k, m) for k, m in zip(sizes, monitors)))
        got: list[Candidate] = []
        cut: list[bool] = []
        short = False
        for r, k, mon in zip(results, sizes, monitors):
            if r is None or len(r) < k:
                short = True
            for i, c in enumerate(r or []):
                got.append(c)
                cut.append(i in mon.cut or c.sample.finish_reason == "monitor")
        return got, cut, short
