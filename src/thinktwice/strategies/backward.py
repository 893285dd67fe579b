"""FOBAR: forward voting combined with backward verification (Jiang et al., arXiv 2308.07758;
METHODS §5.1).

1. Forward: ``M_F = 10`` samples; ``P_F(A) = count(A) / M_F``.
2. If more than one distinct answer: for every number of the question, mask it and sample
   ``M_B = 8`` backward chains per (masked question, candidate answer) through
   :func:`thinktwice.signals.backward.backward_verify`; ``z(A)`` = chains recovering the number.
3. ``P_B(A) = (z(A) + ε/|C|) / (Σ_C z + ε)``, ``ε = 1e-8``.
4. ``P(A) ∝ P_F(A)^α · P_B(A)^(1-α)``, ``α = 0.5``; the argmax wins, confidence = normalised P.

Cost: ``M_F + |C| × #numbers × M_B`` samples (stage ``fobar``). When the budget cannot hold the
whole backward pass it is skipped and the forward vote is returned (``stopped_because="budget"``),
so a partial backward count never tilts the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import vote

__all__ = ["Fobar", "fobar_combine"]

EPSILON = 1e-8


def fobar_combine(
    forward: Mapping[str, float], recovered: Mapping[str, int], m_f: int, alpha: float = 0.5
) -> dict[str, float]:
    """Normalised ``P_F^α · P_B^(1-α)`` per answer from forward vote counts and backward recoveries.

    >>> r = fobar_combine({"7": 4, "8": 6}, {"7": 16, "8": 8}, 10)
    >>> max(r, key=r.get)
    '7'
    """
    answers = list(forward)
    total_z = sum(recovered.get(a, 0) for a in answers)
    n_c = len(answers)
    raw = {}
    for a in answers:
        p_f = forward[a] / m_f
        p_b = (recovered.get(a, 0) + EPSILON / n_c) / (total_z + EPSILON)
        raw[a] = (p_f**alpha) * (p_b ** (1 - alpha))
    s = sum(raw.values())
    return {a: v / s for a, v in raw.items()} if s > 0 else raw


@dataclass(frozen=True)
class Fobar(BaseStrategy):
    """Forward vote of ``m_f`` samples, backward verification with ``m_b`` chains, combined by ``alpha``."""

    name: ClassVar[str] = "fobar"
    m_f: int = 10
    m_b: int = 8
    alpha: float = 0.5
    max_masks: int | None = None
    temperature: float = 0.7
    backward_max_tokens: int = 256
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.m_f < 1 or self.m_b < 1 or self.batch < 1:
            raise ConfigError(f"fobar needs m_f, m_b, batch >= 1, got {self.m_f}, {self.m_b}, {self.batch}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")

    async def decide(self, ctx: RunContext) -> Verdict:
        from thinktwice.signals.backward import BackwardConfig, backward_verify, masks

        params = sampling_params(ctx, self.temperature, 1.0, self.max_tokens)
        cands, short = await draw(ctx, self.m_f, params, self.batch)
        fwd = vote(cands, ctx.query.answers)
        ctx.note("forward", samples=len(cands), tallies=fwd.tallies)
        stopped = "budget" if short else "done"
        if len(fwd.classes) < 2:
            ctx.note("backward", skipped="at most one distinct answer")
            return Verdict(fwd.answer, fwd.share, cands, fwd.representative, stopped_because=stopped,
                           votes=fwd.tallies)
        n_masks = len(masks(ctx.query.question, self.max_masks))
        need_calls = len(fwd.classes) * n_masks
        if n_masks == 0:
            ctx.note("backward", skipped="no number in the question to mask")
            return Verdict(fwd.answer, fwd.share, cands, fwd.representative, stopped_because=stopped,
                           votes=fwd.tallies)
        if not self._affordable(ctx, need_calls):
            ctx.note("backward", skipped="budget cannot hold the backward pass", calls_needed=need_calls)
            return Verdict(fwd.answer, fwd.share, cands, fwd.representative, stopped_because="budget",
                           votes=fwd.tallies)
        cfg = BackwardConfig(m_b=self.m_b, max_masks=self.max_masks, temperature=self.temperature,
                             max_tokens=self.backward_max_tokens)
        try:
            res = await backward_verify(ctx.query, [c.answer for c in fwd.classes], ctx.meter, cfg,
                                        stage="fobar", seed=ctx.next_seed(need_calls * self.m_b))
        except BudgetExhausted as e:
            ctx.note("backward", skipped=f"budget ran out during the backward pass ({e.what})")
            return Verdict(fwd.answer, fwd.share, cands, fwd.representative, stopped_because="budget",
                           votes=fwd.tallies)
        combined = fobar_combine(fwd.tallies, res.recovered, len(cands), self.alpha)
        ctx.note("backward", recovered=dict(res.recovered), trials=dict(res.trials))
        ctx.note("combine", alpha=self.alpha, p=combined)
        best = max(fwd.classes, key=lambda c: (combined[c.answer], -c.members[0]))
        return Verdict(best.answer, combined[best.answer], cands, best.members[0], stopped_because=stopped,
                       votes=combined)

    def _affordable(self, ctx: RunContext, calls: int) -> bool:
        m = ctx.meter
        samples = calls * self.m_b
        if m.remaining_calls is not None and m.remaining_calls < calls:
            return False
        if m.remaining_samples is not None and m.remaining_samples < samples:
            return False
        return m.remaining_tokens is None or m.remaining_tokens >= samples * self.backward_max_tokens
