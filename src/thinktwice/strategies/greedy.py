"""Greedy decoding: one sample at temperature 0. The cheapest baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict

__all__ = ["Greedy"]


@dataclass(frozen=True)
class Greedy(BaseStrategy):
    """One call, temperature 0; confidence is the mean token probability when logprobs exist."""

    name: ClassVar[str] = "greedy"
    max_tokens: int | None = None

    async def decide(self, ctx: RunContext) -> Verdict:
        params = ctx.query.params.replace(temperature=0.0)
        if self.max_tokens is not None:
            params = params.replace(max_tokens=self.max_tokens)
        cands = await ctx.sample(1, params)
        c = cands[0]
        conf = None
        toks = c.sample.tokens
        if toks:
            import math

            conf = math.exp(sum(t.logprob for t in toks) / len(toks))
        ctx.note("greedy", answer=c.answer, tokens=c.sample.usage.completion_tokens)
        return Verdict(c.answer, conf, cands, 0, votes={c.answer: 1.0} if c.answer is not None else {})
