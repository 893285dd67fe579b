"""Selection by a signal: weighted vote (METHODS §4.2), best-of-n (§2.1) and Borda vote by
self-certainty rank (Kang et al., arXiv 2502.18581, §4.3).

All three draw ``n`` samples like self-consistency, score them with one signal through the run's
Meter (so a signal's own calls land on the same bill), and select:

- ``weighted-vote``: each candidate votes for its answer with a non-negative weight from its score
  (scores that can be negative are treated as log-scale and exponentiated);
- ``best-of-n``: the highest-scoring candidate with an answer;
- ``borda``: rank by the signal (rank 1 = most certain); each candidate with an answer votes
  ``(N - r + 1) ** p``; ``p = 0`` is majority vote, large ``p`` tends to best-of-n.

When no candidate with an answer has a usable score (the signal's own calls ran out of budget, or
it returned NaN / zero weights for all of them), each falls back to the plain majority vote and
says so in the trace (a ``fallback`` step with the reason).
"""

from __future__ import annotations

import math
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
    weights_from_scores,
)
from thinktwice.strategies.voting import Vote, vote
from thinktwice.types import Candidate

__all__ = ["BestOfN", "Borda", "WeightedVote", "borda_weights"]


@dataclass(frozen=True)
class _SignalSampler(BaseStrategy):
    """Shared config: ``n`` samples at ``temperature``, scored by ``signal``."""

    signal: SignalSpec = "path-prob"
    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"{self.name} needs n >= 1, got {self.n}")
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if not isinstance(self.signal, str) and not hasattr(self.signal, "score"):
            raise ConfigError(f"signal must be a signal name or a Signal, got {self.signal!r}")

    def config(self) -> dict[str, object]:
        d = super().config()
        d["signal"] = self.signal if isinstance(self.signal, str) else getattr(self.signal, "name", "?")
        return d

    async def _sample_and_score(self, ctx: RunContext) -> tuple[list[Candidate], list[float], bool, str]:
        sig = resolve_signal(self.signal)
        check_signal(sig, ctx)
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens)
        cands, short = await draw(ctx, self.n, params, self.batch)
        ctx.note("sample", samples=len(cands), answers=[c.answer for c in cands])
        try:
            cands = await score_candidates(sig, ctx, cands)
        except BudgetExhausted as e:  # a signal's own calls ran out: vote unweighted, say so
            ctx.note("budget", what=e.what, during="scoring")
            return cands, [math.nan] * len(cands), True, sig.name
        return cands, [c.scores[sig.name] for c in cands], short, sig.name


@dataclass(frozen=True)
class WeightedVote(_SignalSampler):
    """Vote over answer classes with weights from ``signal`` (METHODS §4.2).

    >>> WeightedVote(signal="path-prob", n=16).name
    'weighted-vote'
    """

    name: ClassVar[str] = "weighted-vote"

    async def decide(self, ctx: RunContext) -> Verdict:
        cands, scores, short, sig = await self._sample_and_score(ctx)
        weights = weights_from_scores(scores)
        if any(math.isinf(w) for w in weights):  # the limit of a vote: infinite weights outweigh all others
            weights = [1.0 if math.isinf(w) else 0.0 for w in weights]
        if any(c.answer is not None and w > 0 for c, w in zip(cands, weights)):
            v = vote(cands, ctx.query.answers, weights)
            ctx.note("vote", signal=sig, weights=[round(w, 6) for w in weights], tallies=v.tallies)
        else:
            v = _majority_fallback(ctx, cands, scores, sig)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)


def _majority_fallback(ctx: RunContext, cands: list[Candidate], scores: list[float], sig: str) -> Vote:
    """The plain majority vote, noted as a ``fallback`` step saying why the scores were unusable."""
    answered = [s for c, s in zip(cands, scores) if c.answer is not None]
    reason = "scores missing" if all(math.isnan(s) for s in answered) else "no positive weight"
    v = vote(cands, ctx.query.answers)
    ctx.note("fallback", signal=sig, reason=reason, to="majority", tallies=v.tallies)
    return v


@dataclass(frozen=True)
class BestOfN(_SignalSampler):
    """Return the answer of the highest-scoring candidate (self-certainty best-of-N, arXiv 2502.18581).

    Candidates without an answer or without a score (NaN) are passed over; ties go to the earlier
    candidate; when none is left, the plain majority vote answers. Confidence is the winner's share
    of the (non-negative) weights, as in a weighted vote of one.
    """

    name: ClassVar[str] = "best-of-n"

    async def decide(self, ctx: RunContext) -> Verdict:
        cands, scores, short, sig = await self._sample_and_score(ctx)
        weights = weights_from_scores(scores)
        best: int | None = None
        for i, c in enumerate(cands):
            if c.answer is None or math.isnan(scores[i]):
                continue
            if best is None or scores[i] > scores[best]:
                best = i
        stopped = "budget" if short else "done"
        if best is None:
            v = _majority_fallback(ctx, cands, scores, sig)
            return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)
        total = sum(weights)
        conf = weights[best] / total if total > 0 else None
        ctx.note("select", signal=sig, chosen=best, answer=cands[best].answer, score=scores[best])
        return Verdict(cands[best].answer, conf, cands, best, stopped_because=stopped,
                       votes={cands[best].answer or "": scores[best]})


def borda_weights(scores: list[float], p: float) -> list[float]:
    """Borda weights ``(N - r + 1) ** p`` with rank ``r = 1`` for the highest score (METHODS §4.3).

    Ties in score share the better rank's order of appearance (stable sort); NaN ranks last.
    """
    n = len(scores)
    order = sorted(range(n), key=lambda i: (math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0.0))
    w = [0.0] * n
    for r, i in enumerate(order, start=1):
        w[i] = float(n - r + 1) ** p
    return w


@dataclass(frozen=True)
class Borda(_SignalSampler):
    """Borda vote weighted by self-certainty rank (Kang et al., arXiv 2502.18581; released p = 0.5).

    Candidates without an answer are ranked but cast no vote; when no candidate with an answer
    has a score, the plain majority vote answers.
    """

    name: ClassVar[str] = "borda"
    signal: SignalSpec = "self-certainty"
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.p >= 0 and math.isfinite(self.p)):
            raise ConfigError(f"borda needs a finite p >= 0, got {self.p}")

    async def decide(self, ctx: RunContext) -> Verdict:
        cands, scores, short, sig = await self._sample_and_score(ctx)
        if all(math.isnan(s) for c, s in zip(cands, scores) if c.answer is not None):
            v = _majority_fallback(ctx, cands, scores, sig)  # ranks of missing scores mean nothing
        else:
            weights = borda_weights(scores, self.p)
            v = vote(cands, ctx.query.answers, weights)
            ctx.note("vote", signal=sig, p=self.p, weights=[round(w, 6) for w in weights], tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative,
                       stopped_because="budget" if short else "done", votes=v.tallies)
