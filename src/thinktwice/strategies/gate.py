"""Confidence gate: answer with one sample when a signal says it is confident, sample more only
when it is not (the adaptive-compute idea of Manvi et al., arXiv 2410.02725, with any signal, e.g.
self-certainty, Kang et al., arXiv 2502.18581).

The first sample is scored; at or above ``threshold`` it is the answer (``stopped_because =
"confident"``). Below it, ``more`` samples are drawn concurrently and all ``1 + more`` vote
(``"done"``). Probability-valued signals have a default threshold (0.9); for signals on other
scales (self-certainty is in nats and depends on the vocabulary) ``threshold`` must be given,
ideally tuned on held-out questions (METHODS §11.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.scoring import (
    SignalSpec,
    check_signal,
    resolve_signal,
    score_candidates,
    signal_name,
)
from thinktwice.strategies.voting import vote

__all__ = ["PROBABILITY_SIGNALS", "ConfidenceGate", "default_threshold"]

PROBABILITY_SIGNALS = frozenset({"path-prob", "p-true", "verbalized", "vote-share"})
"""Signals whose values are probabilities in [0, 1]; they get a default threshold of 0.9."""


def default_threshold(signal: SignalSpec, threshold: float | None) -> float:
    """``threshold`` or, for probability-valued signals, 0.9; ConfigError otherwise."""
    if threshold is not None:
        return threshold
    name = signal_name(signal)
    if name in PROBABILITY_SIGNALS:
        return 0.9
    raise ConfigError(f"signal {name!r} is not a probability; give threshold= (tune it on held-out questions)")


@dataclass(frozen=True)
class ConfidenceGate(BaseStrategy):
    """One sample if confident, else ``more`` samples and a majority vote.

    >>> ConfidenceGate().more
    7
    """

    name: ClassVar[str] = "confidence-gate"
    signal: SignalSpec = "path-prob"
    threshold: float | None = None
    more: int = 7
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        default_threshold(self.signal, self.threshold)
        if self.more < 1 or self.batch < 1:
            raise ConfigError(f"more and batch must be >= 1, got {self.more}, {self.batch}")

    async def decide(self, ctx: RunContext) -> Verdict:
        sig = resolve_signal(self.signal)
        check_signal(sig, ctx)
        threshold = default_threshold(self.signal, self.threshold)
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens)
        first = await ctx.sample(1, params)
        first = await score_candidates(sig, ctx, first)
        s = first[0].scores[sig.name]
        if s >= threshold and first[0].answer is not None:
            ctx.note("gate", score=s, threshold=threshold, passed=True)
            conf = s if sig.name in PROBABILITY_SIGNALS else None
            return Verdict(first[0].answer, conf, first, 0, stopped_because="confident",
                           votes={first[0].answer: 1.0})
        ctx.note("gate", score=s, threshold=threshold, passed=False, more=self.more)
        try:
            extra, short = await draw(ctx, self.more, params, self.batch)
        except BudgetExhausted:
            extra, short = [], True
        cands = first + extra
        v = vote(cands, ctx.query.answers)
        ctx.note("vote", samples=len(cands), tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)
