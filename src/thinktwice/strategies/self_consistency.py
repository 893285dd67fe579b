"""Self-consistency (Wang et al., arXiv 2203.11171): sample N reasoning paths, majority-vote the answers.

The universal compute-matched baseline. Votes are over answer equivalence classes; samples
without an extractable answer cast no vote; ties go to the class that appeared first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.voting import vote

__all__ = ["SelfConsistency"]


@dataclass(frozen=True)
class SelfConsistency(BaseStrategy):
    """Draw ``n`` samples at ``temperature`` in concurrent calls of ``batch`` and vote.

    Confidence is the winning answer's vote share.
    """

    name: ClassVar[str] = "self-consistency"
    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"self-consistency needs n >= 1, got {self.n}")
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")

    async def decide(self, ctx: RunContext) -> Verdict:
        params = ctx.query.params.replace(temperature=self.temperature, top_p=self.top_p)
        if self.max_tokens is not None:
            params = params.replace(max_tokens=self.max_tokens)
        batch = self.batch if ctx.meter.capabilities.native_n else 1
        cands, short = await ctx.sample_batches(self.n, params, batch=batch)
        v = vote(cands, ctx.query.answers)
        ctx.note("vote", samples=len(cands), tallies=v.tallies, no_answer=sum(c.answer is None for c in cands))
        stopped = "budget" if short else "done"
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)
