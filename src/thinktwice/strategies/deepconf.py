"""DeepConf: confidence-filtered, confidence-weighted voting, offline and online (Fu et al., arXiv
2508.15260; METHODS §2.2 and §6.5; released code facebookresearch/deepconf).

Token confidence ``C_t`` is the negative mean top-k logprob; a *group* confidence is its mean over
a sliding window of ``window`` tokens. Both variants need at least 2 top logprobs per token: with
one, ``C_t = -log p(chosen)`` grows as the model is *less* sure, which inverts every score.

- ``deepconf-offline``: draw ``n`` traces and score each (``lowest`` group by default); among the
  traces with an answer, keep those scoring at least the ``100 (1 - eta)``-th percentile of their
  scores (numpy's linear percentile, as the released ``filter_top_confidence``) and vote over the
  kept ones weighted by the score.
- ``deepconf-online``: draw ``warm_up`` traces; the stopping threshold is the
  ``(100 - percentile)``-th percentile of their lowest-group confidences (keep-90% with the default
  90). Warm-up traces below it get weight 0, as in the released code. Later traces are drawn in
  concurrent batches through the backend's ``monitor`` callback, which stops a trace as soon as its
  current window mean falls below the threshold: its remaining tokens are never generated, and only
  the tokens before the cut are billed. Cut traces cast no vote. Before each batch the run stops
  when the leading answer holds ``consensus`` (0.95) of the vote weight, or at ``max_samples``.

Votes run over the kept traces only (the others form no class and break no tie); when no kept
trace has an answer, the plain majority vote answers (offline: of all traces; online: of the
warm-up traces, the only ones certain to have run to the end) and the trace says so.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.base import TokenMonitor
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.signals.token_stats import (
    DEEPCONF_K,
    DEEPCONF_WINDOW,
    TokenArrays,
    as_arrays,
    deepconf_scores,
    group_confidences,
    token_confidences,
)
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import Vote, vote
from thinktwice.types import Candidate, SamplingParams, TokenStat

__all__ = ["DeepConfOffline", "DeepConfOnline", "WindowMonitor", "linear_percentile",
           "lowest_group_confidence", "percentile_position"]

log = logging.getLogger(__name__)

_SCORES = ("mean", "tail", "bottom10", "lowest")


def percentile_position(n: int, pct: float) -> tuple[int, int, float]:
    """Where numpy's default (``linear``) percentile ``pct`` of ``n`` sorted values lies: the two
    neighbouring ranks and the interpolation weight, computed as numpy computes them."""
    v = (n - 1) * (pct / 100)
    lo = math.floor(v)
    return min(max(lo, 0), n - 1), min(max(lo + 1, 0), n - 1), v - lo


def lerp(a: float, b: float, t: float) -> float:
    """numpy's percentile interpolation, rounding included (from the nearer end when t >= 0.5)."""
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def linear_percentile(values: Sequence[float], pct: float) -> float:
    """``np.percentile(values, pct)`` (linear method) for non-empty finite ``values``.

    Written out so that the offline replay of :mod:`thinktwice.eval.curves` can compute the same
    threshold to the last bit from sorted prefixes.

    >>> linear_percentile([3.0, 1.0, 2.0, 4.0], 10.0)
    1.3
    """
    s = sorted(values)
    lo, hi, t = percentile_position(len(s), pct)
    return lerp(s[lo], s[hi], t)


def lowest_group_confidence(c: Candidate, window: int, k: int = DEEPCONF_K) -> float:
    """Minimum sliding-window mean of token confidence (NaN for an empty trace)."""
    toks = c.sample.tokens
    if not toks:
        return math.nan
    g = group_confidences(toks, window, k)
    return float(g.min()) if g.size else math.nan


class WindowMonitor:
    """A per-call token monitor: stops sequence ``i`` once its last-``window`` mean confidence < threshold.

    Window means are computed as :func:`~thinktwice.signals.token_stats.group_confidences`
    computes them (a running sum, the same rounding), so a trace is cut exactly where its stored
    group confidences say it would be. :meth:`first_stop` judges a whole stored sequence at once
    (pool replays); it gives the same decision as calling the monitor token by token.
    """

    def __init__(self, threshold: float, window: int, k: int = DEEPCONF_K) -> None:
        self.threshold, self.window, self.k = threshold, window, k
        self._sums: dict[int, deque[float]] = {}
        self.cut: dict[int, int] = {}

    def __call__(self, index: int, position: int, stat: TokenStat) -> bool:
        c = float(token_confidences(TokenArrays.from_tokens((stat,)), self.k)[0])
        sums = self._sums.setdefault(index, deque([0.0], maxlen=self.window + 1))
        sums.append(sums[-1] + c)
        if len(sums) == self.window + 1 and (sums[-1] - sums[0]) / self.window < self.threshold:
            self.cut[index] = position + 1
            return True
        return False

    def first_stop(self, index: int, tokens: Sequence[TokenStat]) -> int | None:
        """How many of ``tokens`` sequence ``index`` keeps before the monitor stops it (None: all)."""
        conf = token_confidences(as_arrays(tokens), self.k)
        w = self.window
        if conf.shape[0] < w:
            return None
        c = np.concatenate(([0.0], np.cumsum(conf)))
        hit = np.flatnonzero((c[w:] - c[:-w]) / w < self.threshold)
        if not hit.size:
            return None
        self.cut[index] = int(hit[0]) + w
        return self.cut[index]


def _require_tokens(ctx: RunContext, name: str) -> None:
    caps = ctx.meter.capabilities
    if not caps.logprobs:
        raise CapabilityError(f"{name} needs token logprobs; backend {ctx.meter.name!r} does not return them")
    if caps.top_logprobs < 2:
        raise CapabilityError(
            f"{name} needs top-k logprobs with k >= 2 per token (top_logprobs >= 2); backend "
            f"{ctx.meter.name!r} returns {caps.top_logprobs}. With one logprob per token, -log p of the "
            "chosen token grows as the model is less sure, which inverts DeepConf's confidence. Use a "
            "backend with top_logprobs >= 2 (DeepConf uses 20)."
        )


def _fallback(ctx: RunContext, cands: Sequence[Candidate], reason: str, among: Sequence[int] | None = None) -> Vote:
    v = vote(cands, ctx.query.answers, voters=among)
    ctx.note("fallback", reason=reason, to="majority", tallies=v.tallies)
    return v


@dataclass(frozen=True)
class DeepConfOffline(BaseStrategy):
    """Vote over the traces scoring in the top ``eta`` by DeepConf score, weighted by that score."""

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
        stopped = "budget" if short else "done"
        scored = [i for i, c in enumerate(cands) if c.answer is not None and math.isfinite(scores[i])]
        if not scored:
            v = _fallback(ctx, cands, "scores missing")
            return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)
        cutoff = linear_percentile([scores[i] for i in scored], (1 - self.eta) * 100)
        kept = {i for i in scored if scores[i] >= cutoff}
        weights = [max(scores[i], 0.0) if i in kept else 0.0 for i in range(len(cands))]
        v = vote(cands, ctx.query.answers, weights, voters=kept)
        ctx.note("filter", score=self.score, eta=self.eta, cutoff=cutoff, kept=len(kept))
        ctx.note("vote", tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)


@dataclass(frozen=True)
class DeepConfOnline(BaseStrategy):
    """Warm-up traces set a confidence threshold; later traces are cut mid-generation below it.

    A cap below the warm-up (``max_samples < warm_up``) makes the whole run a warm-up of
    ``max_samples`` traces.
    """

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
        if self.warm_up < 1 or self.max_samples < 1:
            raise ConfigError(f"warm_up and max_samples must be >= 1, got {self.warm_up}, {self.max_samples}")
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
        warm_n = min(self.warm_up, self.max_samples)
        warm, short = await draw(ctx, warm_n, params, warm_n)
        conf = [lowest_group_confidence(c, self.window, self.k) for c in warm]
        finite = [x for x in conf if math.isfinite(x)]
        stopped = "budget" if short else "done"
        if not finite:
            ctx.note("warm-up", samples=len(warm), threshold=None)
            v = _fallback(ctx, warm, "no warm-up trace has a confidence")
            return Verdict(v.answer, v.share, warm, v.representative, stopped_because=stopped, votes=v.tallies)
        threshold = linear_percentile(finite, 100.0 - self.percentile)
        cands = [c.with_score("deepconf-lowest", x) for c, x in zip(warm, conf)]
        weights = [x if math.isfinite(x) and x >= threshold else 0.0 for x in conf]
        kept = {i for i, x in enumerate(conf) if math.isfinite(x) and x >= threshold}
        ctx.note("warm-up", samples=len(warm), threshold=threshold, kept=len(kept))
        fmt = ctx.query.answers
        stopped = "budget" if short else "max-samples"
        while not short and len(cands) < self.max_samples:
            v = vote(cands, fmt, weights, voters=kept)
            if v.share_at_least(self.consensus):
                stopped = "converged"
                break
            k = min(self.batch, self.max_samples - len(cands))
            got, cut, short = await self._draw_monitored(ctx, params, k, threshold)
            for c, was_cut in zip(got, cut):
                x = lowest_group_confidence(c, self.window, self.k)
                keep = not was_cut and math.isfinite(x) and x >= threshold
                if keep:
                    kept.add(len(cands))
                cands.append(c.with_score("deepconf-lowest", x))
                weights.append(x if keep else 0.0)
            ctx.note("batch", drew=len(got), cut=sum(cut),
                     tokens=[c.sample.usage.completion_tokens for c in got], samples=len(cands))
            if short:
                stopped = "budget"
        v = vote(cands, fmt, weights, voters=kept)
        if v.answer is None:  # no kept trace has an answer: the warm-up's plain vote rather than none
            v = _fallback(ctx, cands, "no kept trace has an answer", among=range(len(warm)))
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
