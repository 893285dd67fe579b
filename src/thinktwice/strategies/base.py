"""The Strategy protocol and the base class that does the accounting for every strategy.

A strategy's ``decide`` works through a :class:`RunContext`: it draws samples from the metered
backend, notes trace steps, and returns a :class:`Verdict`. ``run`` wraps that with a Meter, so
the Decision's usage is what was actually spent; running out of budget is an outcome
(``stopped_because="budget"``), never an exception. Strategies hold only their configuration;
per-problem state lives in the RunContext.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from thinktwice.lm.base import Backend, TokenMonitor
from thinktwice.lm.meter import BudgetExhausted, Meter
from thinktwice.tasks.base import Query
from thinktwice.types import Budget, Candidate, Decision, Prompt, Sample, SamplingParams, TraceStep

__all__ = ["Strategy", "BaseStrategy", "RunContext", "Verdict"]


@runtime_checkable
class Strategy(Protocol):
    """Spends a Budget through a Backend to answer one Query; returns a Decision."""

    name: str

    async def run(
        self, query: Query, backend: Backend, budget: Budget | None = None, *, seed: int = 0
    ) -> Decision: ...


@dataclass
class Verdict:
    """What ``decide`` returns; ``run`` adds the accounting to make a Decision."""

    answer: str | None
    confidence: float | None
    candidates: Sequence[Candidate]
    chosen: int | None
    stopped_because: str = "done"
    votes: dict[str, float] = field(default_factory=dict)
    text: str | None = None


@dataclass
class RunContext:
    """Per-problem state of one strategy run: the query, the meter, a seeded RNG and the trace."""

    query: Query
    meter: Meter
    seed: int
    trace: list[TraceStep] = field(default_factory=list)
    rng: random.Random = field(init=False)
    _seed_counter: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def note(self, kind: str, **detail: Any) -> None:
        self.trace.append(TraceStep(kind, detail))

    def next_seed(self, n: int = 1) -> int:
        """A fresh seed for a call of ``n`` samples; calls get disjoint seed ranges."""
        s = self.seed * 1_000_003 + self._seed_counter
        self._seed_counter += n
        return s

    def candidates(self, samples: Sequence[Sample], stage: str = "sample") -> list[Candidate]:
        fmt = self.query.answers
        return [Candidate(sample=s, answer=fmt.extract(s.text), stage=stage) for s in samples]

    async def sample(
        self,
        n: int,
        params: SamplingParams,
        *,
        prompt: Prompt | None = None,
        stage: str = "sample",
        monitor: TokenMonitor | None = None,
    ) -> list[Candidate]:
        """Draw up to ``n`` samples in one call (fewer if the budget allows fewer).

        Raises BudgetExhausted when none fit; callers that can stop early catch it.
        """
        p = params.replace(seed=self.next_seed(n)) if params.temperature > 0 else params
        samples = await self.meter.sample(prompt or self.query.prompt, p, n, monitor=monitor, stage=stage)
        return self.candidates(samples, stage)

    async def sample_batches(
        self,
        n: int,
        params: SamplingParams,
        *,
        batch: int,
        prompt: Prompt | None = None,
        stage: str = "sample",
    ) -> tuple[list[Candidate], bool]:
        """Draw ``n`` samples as concurrent calls of at most ``batch`` each.

        Returns the candidates and whether the budget cut the draw short.
        """
        sizes = [min(batch, n - i) for i in range(0, n, batch)]
        seeds = [self.next_seed(k) for k in sizes]

        async def one(k: int, s: int) -> list[Sample] | None:
            p = params.replace(seed=s) if params.temperature > 0 else params
            try:
                return await self.meter.sample(prompt or self.query.prompt, p, k, stage=stage)
            except BudgetExhausted:
                return None

        results = await asyncio.gather(*(one(k, s) for k, s in zip(sizes, seeds)))
        out: list[Candidate] = []
        short = False
        for r, k in zip(results, sizes):
            if r is None or len(r) < k:
                short = True
            if r:
                out.extend(self.candidates(r, stage))
        return out, short


class BaseStrategy(ABC):
    """Shared ``run``: meters the backend, calls ``decide``, assembles the Decision."""

    name: ClassVar[str] = ""

    async def run(
        self, query: Query, backend: Backend, budget: Budget | None = None, *, seed: int = 0
    ) -> Decision:
        meter = backend if isinstance(backend, Meter) and budget is None else Meter(backend, budget)
        ctx = RunContext(query=query, meter=meter, seed=seed)
        try:
            v = await self.decide(ctx)
        except BudgetExhausted as e:
            ctx.note("budget", what=e.what)
            v = Verdict(None, None, [], None, stopped_because="budget")
        return Decision(
            answer=v.answer,
            confidence=v.confidence,
            candidates=tuple(v.candidates),
            chosen=v.chosen,
            usage=meter.usage,
            stages=meter.stages,
            trace=tuple(ctx.trace),
            stopped_because=v.stopped_because,
            strategy=self.name,
            votes=v.votes,
            text=v.text,
        )

    @abstractmethod
    async def decide(self, ctx: RunContext) -> Verdict:
        """Strategy logic: sample through ``ctx``, note the trace, return a Verdict."""

    def config(self) -> dict[str, Any]:
        """The strategy's settings, stored with each run."""
        from dataclasses import asdict, is_dataclass

        return {"name": self.name, **(asdict(self) if is_dataclass(self) else {})}
