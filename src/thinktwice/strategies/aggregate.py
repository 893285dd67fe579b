"""Aggregation by the model itself: one more call reads all ``n`` samples (METHODS §4.5-4.7).

- ``usc``: Universal Self-Consistency (Chen et al., arXiv 2311.17311): the model picks the response
  most consistent with the majority ("The most consistent response is Response X").
- ``self-agreement`` (Lin et al., arXiv 2311.08154): the model states the answer most responses
  agree on (an answer, not an index).
- ``gsa``: Generative Self-Aggregation (Li et al., arXiv 2503.04104): the model writes a new
  solution using the responses as material.

The responses are shown in an order shuffled with the run's seed (position bias, METHODS §11.7),
numbered from 1 ("Response 3" is the third shown), and the order is in the trace. The aggregation
call runs at temperature 0 under the stage ``"aggregate"``; its prompt grows as ``n × response
length``, which the Decision's usage shows. The aggregator's reply is not a candidate (its text
would be graded as an answer: "Response 3" as 3); it is in the trace, and for self-agreement and
GSA in ``Decision.text``. If the reply cannot be parsed, or the budget or the model's context has no
room for the call, the plain majority is returned and the trace says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError, ContextLengthExceeded
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, follow_up, sampling_params
from thinktwice.strategies.voting import Vote, vote
from thinktwice.types import Candidate, Message, Prompt

__all__ = ["GenerativeSelfAggregation", "SelfAgreement", "UniversalSelfConsistency", "parse_usc_choice"]

_USC_RE = re.compile(r"most consistent response is\s*\**\s*Response\s*#?\s*(\d+)", re.IGNORECASE)


def parse_usc_choice(text: str) -> int | None:
    """The X of "The most consistent response is Response X" (1-based, as shown), or None."""
    m = _USC_RE.search(text)
    return int(m.group(1)) if m else None


def _responses_block(cands: list[Candidate], order: list[int]) -> str:
    """The shown responses, numbered from 1 in ``order``."""
    return "\n\n".join(f"Response {j}:\n{cands[i].sample.text.strip()}" for j, i in enumerate(order, start=1))


@dataclass(frozen=True)
class _Aggregator(BaseStrategy):
    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None
    aggregate_max_tokens: int | None = None
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch < 1:
            raise ConfigError(f"{self.name} needs n and batch >= 1, got {self.n}, {self.batch}")

    def _prompt(self, ctx: RunContext, block: str, n: int) -> Prompt:
        raise NotImplementedError

    def _fallback(self, ctx: RunContext, cands: list[Candidate], v: Vote, why: str, stopped: str) -> Verdict:
        ctx.note("fallback", reason=why, answer=v.answer)
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)

    async def decide(self, ctx: RunContext) -> Verdict:
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens)
        cands, short = await draw(ctx, self.n, params, self.batch)
        v = vote(cands, ctx.query.answers)
        ctx.note("sample", samples=len(cands), tallies=v.tallies)
        if not cands:
            return Verdict(None, None, [], None, stopped_because="budget")
        order = list(range(len(cands)))
        if self.shuffle:
            ctx.rng.shuffle(order)
        prompt = self._prompt(ctx, _responses_block(cands, order), len(cands))
        agg_params = ctx.query.params.replace(temperature=0.0)
        if self.aggregate_max_tokens is not None:
            agg_params = agg_params.replace(max_tokens=self.aggregate_max_tokens)
        try:
            [reply] = await ctx.sample(1, agg_params, prompt=prompt, stage="aggregate")
        except BudgetExhausted as e:
            return self._fallback(ctx, cands, v, f"budget ({e.what})", "budget")
        except ContextLengthExceeded:  # n responses do not fit the model's context
            return self._fallback(ctx, cands, v, "the responses do not fit the context", "budget")
        # the reply is a judgement (or a new solution), not a sample: the trace keeps it, candidates do not
        ctx.note("aggregate", order=order, reply=reply.sample.text, reply_answer=reply.answer)
        return self._finish(ctx, cands, order, reply, v, "budget" if short else "done")

    def _finish(self, ctx: RunContext, cands: list[Candidate], order: list[int], reply: Candidate,
                v: Vote, stopped: str) -> Verdict:
        raise NotImplementedError


@dataclass(frozen=True)
class UniversalSelfConsistency(_Aggregator):
    """The model selects the most consistent of ``n`` responses (arXiv 2311.17311)."""

    name: ClassVar[str] = "usc"

    def _prompt(self, ctx: RunContext, block: str, n: int) -> Prompt:
        return Prompt.user(
            f"I have generated the following responses to the question: {ctx.query.question}\n\n{block}\n\n"
            "Evaluate these responses.\nSelect the most consistent response based on majority consensus.\n"
            'Start your answer with "The most consistent response is Response X" (without quotes).'
        )

    def _finish(self, ctx, cands, order, reply, v, stopped):  # type: ignore[no-untyped-def]
        x = parse_usc_choice(reply.sample.text)
        if x is None or not 1 <= x <= len(order):
            why = "unparsable choice" if x is None else f"no Response {x} among {len(order)}"
            return self._fallback(ctx, cands, v, why, stopped)
        i = order[x - 1]
        ctx.note("select", response=x, candidate=i, answer=cands[i].answer)
        cls = next((c for c in v.classes if i in c.members), None)
        share = len(cls.members) / max(1, sum(c.answer is not None for c in cands)) if cls else None
        return Verdict(cands[i].answer, share, cands, i, stopped_because=stopped, votes=v.tallies)


@dataclass(frozen=True)
class SelfAgreement(_Aggregator):
    """The model states the answer most responses agree on (arXiv 2311.08154)."""

    name: ClassVar[str] = "self-agreement"

    def _prompt(self, ctx: RunContext, block: str, n: int) -> Prompt:
        return follow_up(ctx.query.prompt, Message(
            "user",
            f"Here are {n} responses to this question:\n\n{block}\n\n"
            "Read them and find the answer that most of them agree on. Give that answer, in the same "
            "final-answer format the question asks for.",
        ))

    def _finish(self, ctx, cands, order, reply, v, stopped):  # type: ignore[no-untyped-def]
        if reply.answer is None:
            return self._fallback(ctx, cands, v, "no answer in the reply", stopped)
        fmt = ctx.query.answers
        chosen = next((i for i, c in enumerate(cands) if c.answer is not None and fmt.equivalent(c.answer, reply.answer)),
                      None)
        return Verdict(reply.answer, None, cands, chosen, stopped_because=stopped, votes=v.tallies,
                       text=reply.sample.text)


@dataclass(frozen=True)
class GenerativeSelfAggregation(_Aggregator):
    """The model writes a new solution from ``n`` responses (arXiv 2503.04104); ``chosen`` is None."""

    name: ClassVar[str] = "gsa"

    def _prompt(self, ctx: RunContext, block: str, n: int) -> Prompt:
        return follow_up(ctx.query.prompt, Message(
            "user",
            f"Here are {n} candidate solutions to this question:\n\n{block}\n\n"
            "Use them as reference material: some may contain mistakes. Write a new, complete and "
            "correct solution, ending with the final answer in the format the question asks for.",
        ))

    def _finish(self, ctx, cands, order, reply, v, stopped):  # type: ignore[no-untyped-def]
        if reply.answer is None:
            return self._fallback(ctx, cands, v, "no answer in the new solution", stopped)
        ctx.note("write", answer=reply.answer)
        return Verdict(reply.answer, None, cands, None, stopped_because=stopped, votes=v.tallies,
                       text=reply.sample.text)
