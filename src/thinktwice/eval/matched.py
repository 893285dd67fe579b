"""Compute-matched self-consistency baselines and paired comparisons (METHODS §1.5, §1.3).

A strategy that spent ``G`` generated tokens per problem on average is compared with
self-consistency at ``k = round(G / t)`` samples, ``t`` being the mean generated tokens of one
sample. The baseline is preferably replayed from one stored pool of samples per problem
(:class:`~thinktwice.lm.pool.PoolSource`) over several seeded orders, so it costs no model calls,
and the comparison is paired by problem: the reported difference is the mean over problems of
(strategy correct - baseline accuracy), with a bootstrap interval over problems.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thinktwice.errors import ConfigError
from thinktwice.eval.stats import bootstrap_ci
from thinktwice.lm.base import Backend
from thinktwice.lm.pool import PoolSource
from thinktwice.strategies.base import Strategy
from thinktwice.tasks.base import Query, Task
from thinktwice.types import Budget, Problem, Sample, Usage

__all__ = [
    "PairedDifference",
    "ReplayResult",
    "draw_pool",
    "matched_k",
    "paired_difference",
    "replay_strategy",
]


def matched_k(generated_tokens_per_problem: float, tokens_per_sample: float, k_max: int | None = None) -> int:
    """Self-consistency size spending about the same generated tokens (at least 1, at most ``k_max``).

    >>> matched_k(450, 100)
    4
    """
    if tokens_per_sample <= 0 or not math.isfinite(tokens_per_sample):
        raise ConfigError(f"tokens per sample must be positive, got {tokens_per_sample}")
    k = max(1, round(generated_tokens_per_problem / tokens_per_sample))
    return min(k, k_max) if k_max is not None else k


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """Mean of ``a - b`` over problems with its bootstrap interval."""

    delta: float
    lo: float
    hi: float
    n: int


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_boot: int = 1000,
                      level: float = 0.95) -> PairedDifference:
    """Paired difference of per-problem scores (same problems in the same order)."""
    if len(a) != len(b):
        raise ConfigError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level)
    return PairedDifference(float(d.mean()), lo, hi, int(d.size))


@dataclass(frozen=True)
class ReplayResult:
    """Per-problem accuracy (mean over orders) and mean compute per problem of one replayed strategy."""

    problem_ids: tuple[str, ...]
    accuracy: tuple[float, ...]
    usage: Usage  # summed over problems and orders
    samples: int  # candidates drawn, summed over problems and orders
    orders: int

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracy)) if self.accuracy else math.nan

    def per_problem(self, field: str) -> float:
        """Mean of a Usage field per (problem, order)."""
        n = max(1, len(self.problem_ids) * self.orders)
        return float(getattr(self.usage, field)) / n

    @property
    def samples_per_problem(self) -> float:
        return self.samples / max(1, len(self.problem_ids) * self.orders)


async def replay_strategy(
    strategy: Strategy,
    source: PoolSource,
    task: Task,
    problems: Sequence[Problem],
    *,
    seeds: Sequence[int] = (0,),
    budget: Budget | None = None,
    concurrency: int = 64,
) -> ReplayResult:
    """Run ``strategy`` on each problem against its stored pool, once per pool order in ``seeds``.

    The same seed gives every strategy the same sample stream (common random numbers). A pool of
    ``N`` samples acts as a sample budget of ``N``: a strategy whose cap exceeds the pool stops at
    the pool's end with ``stopped_because="budget"`` instead of failing.
    """
    sem = asyncio.Semaphore(max(1, concurrency))
    acc = [0.0] * len(problems)
    usage = [Usage()]
    drawn = [0]

    async def one(i: int, p: Problem, s: int) -> None:
        async with sem:
            q = Query.from_task(task, p)
            cap = source.size(p.id)
            limit = Budget(**{**(budget or Budget()).to_dict(),
                              "max_samples": min(cap, budget.max_samples) if budget and budget.max_samples else cap})
            d = await strategy.run(q, source.backend(p.id, seed=s, prompt=q.prompt), limit, seed=s)
            acc[i] += float(task.grade(d.answer, p)) / len(seeds)
            usage[0] = usage[0] + d.usage
            drawn[0] += sum(1 for c in d.candidates if c.stage == "sample")

    await asyncio.gather(*(one(i, p, s) for i, p in enumerate(problems) for s in seeds))
    return ReplayResult(tuple(p.id for p in problems), tuple(acc), usage[0], drawn[0], len(seeds))


async def draw_pool(
    task: Task,
    backend: Backend,
    problems: Sequence[Problem],
    n: int,
    *,
    seed: int = 0,
    temperature: float = 0.7,
    concurrency: int = 16,
    top_logprobs: int = 20,
) -> dict[str, list[Sample]]:
    """Draw ``n`` samples per problem live (self-consistency's calls) and return them as pools.

    Samples carry token statistics with up to ``top_logprobs`` alternatives (capped by the
    backend), so confidence signals and DeepConf can be replayed from the pool.
    """
    from thinktwice.eval.runner import problem_seed
    from thinktwice.strategies.self_consistency import SelfConsistency

    sc = SelfConsistency(n=n, temperature=temperature)
    sem = asyncio.Semaphore(max(1, concurrency))
    pools: dict[str, list[Sample]] = {}

    caps = backend.capabilities
    width = min(top_logprobs, caps.top_logprobs) if caps.logprobs else 0

    async def one(p: Problem) -> None:
        async with sem:
            q = Query.from_task(task, p)
            q = Query(q.problem, q.prompt, q.answers, q.params.replace(logprobs=caps.logprobs, top_logprobs=width))
            d = await sc.run(q, backend, seed=problem_seed(seed, p.id))
            pools[p.id] = [c.sample for c in d.candidates]

    await asyncio.gather(*(one(p) for p in problems))
    return pools
