"""Compute-matched self-consistency baselines and paired comparisons (METHODS §1.5, §1.3).

A strategy that spent ``G`` generated tokens per problem on average is compared with
self-consistency at exactly ``G`` tokens, never fewer. ``T(k)``, the generated tokens per problem
of SC@k, is read from the pool: the mean over problems and seeded orders of the tokens of the
first ``k`` samples of each order (not ``k * t``: the samples of a pool differ in length). When
``T(k) <= G <= T(k+1)`` the baseline is the mixture that runs SC@(k+1) with probability
``w = (G - T(k)) / (T(k+1) - T(k))`` and SC@k otherwise, so its expected tokens are ``G``; its
accuracy on each problem is ``(1 - w) acc_k + w acc_(k+1)``, and the paired difference and its
interval use that interpolated baseline. Below ``T(1)`` the baseline is SC@1 (it spends more than
the strategy); above the pool's largest ``T(K)`` it is SC@K and is *capped*: it spends less than
the strategy, and every table says so (:attr:`MatchedSC.capped`).

The baseline is replayed from one stored pool of samples per problem
(:class:`~thinktwice.lm.pool.PoolSource`) over several seeded orders, so it costs no model calls,
and the comparison is paired by problem: the reported difference is the mean over problems of
(strategy correct - baseline accuracy), with a bootstrap interval over problems.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from thinktwice.errors import AuthenticationError, ConfigError
from thinktwice.eval.stats import bootstrap_ci
from thinktwice.lm.base import Backend
from thinktwice.lm.pool import PoolSource
from thinktwice.strategies.base import Strategy
from thinktwice.tasks.base import Query, Task
from thinktwice.types import Budget, Problem, Sample, Usage

log = logging.getLogger(__name__)

__all__ = [
    "MatchedSC",
    "PairedDifference",
    "ReplayResult",
    "draw_pool",
    "match_sc",
    "matched_baseline",
    "paired_difference",
    "pool_sc_tokens",
    "replay_strategy",
]

_REL_TOL = 1e-9  # token means computed two ways (replay vs direct) agree to float rounding


@dataclass(frozen=True, slots=True)
class MatchedSC:
    """Self-consistency at a strategy's generated tokens: SC@k, or SC@k / SC@(k+1) mixed.

    ``target``: the strategy's generated tokens per problem; ``k``: the smaller size; ``weight``:
    the probability of SC@(k+1) (0 = plain SC@k); ``tokens``: the baseline's own expected tokens
    per problem; ``capped``: the pool holds too few samples, so the baseline spends less than
    ``target``. ``tokens > target`` only when even SC@1 spends more than the strategy.
    """

    target: float
    k: int
    weight: float
    tokens: float
    capped: bool = False

    @property
    def sizes(self) -> tuple[int, ...]:
        """The SC sizes the baseline mixes: (k,) or (k, k + 1)."""
        return (self.k, self.k + 1) if self.weight > 0 else (self.k,)

    @property
    def label(self) -> str:
        """``SC@4`` or ``SC@4/5 mix w=0.37`` (w = weight of SC@5); capped ones end in ``(capped)``."""
        for digits in range(2, 7):  # a weight near 0 or 1 is not shown as exactly 0 or 1
            w = f"{self.weight:.{digits}f}"
            if 0 < float(w) < 1:
                break
        text = f"SC@{self.k}" if self.weight <= 0 else f"SC@{self.k}/{self.k + 1} mix w={w}"
        return text + " (capped)" if self.capped else text

    @property
    def note(self) -> str | None:
        """A plain sentence when the baseline does not spend what the strategy spent, else None."""
        digits = 0 if round(self.tokens) != round(self.target) else 1 if round(self.tokens, 1) != round(
            self.target, 1) else 2
        base, strat = f"{self.tokens:.{digits}f}", f"{self.target:.{digits}f}"
        if self.capped:
            return (f"baseline capped at the pool size: SC@{self.k} spends {base} generated tokens, "
                    f"fewer than the strategy's {strat}")
        if self.tokens > self.target * (1 + _REL_TOL) + _REL_TOL:
            return f"SC@1, the smallest baseline, spends {base} generated tokens, more than the strategy's {strat}"
        return None

    def interpolate(self, by_k: Mapping[int, Sequence[float] | np.ndarray] | Callable[[int], object]
                    ) -> np.ndarray:
        """The mixture's per-item accuracy from SC@k's and SC@(k+1)'s (same items, same order).

        ``by_k`` maps an SC size to its per-item correctness or accuracy (any array shape).
        """
        get = by_k if callable(by_k) else by_k.__getitem__
        lo = np.asarray(get(self.k), dtype=float)
        if self.weight <= 0:
            return lo
        hi = np.asarray(get(self.k + 1), dtype=float)
        if hi.shape != lo.shape:
            raise ConfigError(f"SC@{self.k} and SC@{self.k + 1} scores differ in shape: {lo.shape} vs {hi.shape}")
        return (1.0 - self.weight) * lo + self.weight * hi

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "k": self.k, "weight": self.weight, "tokens": self.tokens,
                "target": self.target, "capped": self.capped, "note": self.note}


def match_sc(target: float, sc_tokens: Sequence[float] | np.ndarray) -> MatchedSC:
    """The SC mixture whose expected generated tokens equal ``target``.

    ``sc_tokens[i]`` is SC@(i+1)'s mean generated tokens per problem (non-decreasing); its
    length is the largest SC size the pool allows.

    >>> m = match_sc(149.0, [100.0, 200.0, 300.0])
    >>> (m.k, round(m.weight, 2), m.tokens, m.label)
    (1, 0.49, 149.0, 'SC@1/2 mix w=0.49')
    >>> match_sc(450.0, [100.0, 200.0, 300.0]).label
    'SC@3 (capped)'
    """
    T = [float(x) for x in sc_tokens]
    if not T:
        raise ConfigError("matching needs SC@1's tokens at least; the pool is empty")
    if not math.isfinite(target) or target < 0:
        raise ConfigError(f"the strategy's generated tokens must be finite and >= 0, got {target}")
    if any(not math.isfinite(x) or x < 0 for x in T):
        raise ConfigError("SC token counts must be finite and >= 0")
    if any(b < a * (1 - _REL_TOL) - _REL_TOL for a, b in zip(T, T[1:])):
        raise ConfigError("SC token counts must not decrease with k")

    def same(a: float, b: float) -> bool:
        return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))

    if target <= T[0] or same(target, T[0]):
        return MatchedSC(target, 1, 0.0, T[0])
    K = len(T)
    if target >= T[-1] or same(target, T[-1]):
        capped = not same(target, T[-1])
        return MatchedSC(target, K, 0.0, T[-1], capped=capped)
    j = bisect.bisect_right(T, target)  # T[j-1] <= target < T[j], 1 <= j < K
    lo, hi = T[j - 1], T[j]
    if same(target, lo):
        return MatchedSC(target, j, 0.0, lo)
    w = (target - lo) / (hi - lo)
    return MatchedSC(target, j, w, (1.0 - w) * lo + w * hi)


async def pool_sc_tokens(source: PoolSource, task: Task, problems: Sequence[Problem], *,
                         seeds: Sequence[int] = (0,), k_max: int | None = None) -> list[float]:
    """SC@k's generated tokens per problem for k = 1..k_max, as the pool bills them.

    For each problem and seed the pool's order is served once (what SC@k's replay is served,
    truncated by the task's ``max_tokens`` as there); ``T(k)`` is the mean over problems and seeds
    of the first ``k`` samples' tokens. A problem with fewer than ``k`` samples contributes all of
    them (SC@k's replay stops at the pool's end). ``k_max`` defaults to the largest pool.
    """
    if not problems or not seeds:
        raise ConfigError("pool_sc_tokens needs at least one problem and one seed")
    K = k_max if k_max is not None else max(source.size(p.id) for p in problems)
    if K < 1:
        raise ConfigError(f"k_max must be >= 1, got {K}")
    total = np.zeros(K)
    for p in problems:
        q = Query.from_task(task, p)
        params = q.params.replace(logprobs=False)
        for s in seeds:
            b = source.backend(p.id, seed=s)
            served = await b.sample(q.prompt, params, n=min(K, b.remaining)) if b.remaining else []
            cum = np.cumsum([x.usage.completion_tokens for x in served], dtype=float)
            row = np.full(K, cum[-1] if cum.size else 0.0)
            row[: cum.size] = cum[:K]
            total += row
    return (total / (len(problems) * len(seeds))).tolist()


async def matched_baseline(
    target: float, source: PoolSource, task: Task, problems: Sequence[Problem], *,
    seeds: Sequence[int] = (0,), sc_tokens: Sequence[float] | None = None, k_max: int | None = None,
    concurrency: int = 64,
) -> tuple[MatchedSC, np.ndarray]:
    """Match ``target`` tokens and replay the baseline: (the match, per-problem interpolated accuracy).

    ``sc_tokens`` (from :func:`pool_sc_tokens` with the same seeds) saves recomputing them when
    several strategies are matched against one pool.
    """
    from thinktwice.strategies.self_consistency import SelfConsistency

    T = sc_tokens if sc_tokens is not None else await pool_sc_tokens(source, task, problems, seeds=seeds,
                                                                      k_max=k_max)
    m = match_sc(target, T)
    acc: dict[int, tuple[float, ...]] = {}
    for k in m.sizes:
        acc[k] = (await replay_strategy(SelfConsistency(n=k), source, task, problems, seeds=seeds,
                                        concurrency=concurrency)).accuracy
    return m, m.interpolate(acc)


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
    backend), so confidence signals and DeepConf can be replayed from the pool. A problem whose draw
    fails (after the backend's retries, or with any unexpected error) is logged and left out of the
    result, so the caller can leave it out of the comparison; a rejected key or a missing capability
    stops the draw.
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
            try:
                d = await sc.run(q, backend, seed=problem_seed(seed, p.id))
            except (AuthenticationError, ConfigError):
                raise
            except Exception as e:  # noqa: BLE001 (one problem's failure must not end the draw for the others)
                log.warning("matched SC pool: problem %s failed: %s: %s", p.id, type(e).__name__, e)
                return
            pools[p.id] = [c.sample for c in d.candidates]

    await asyncio.gather(*(one(p) for p in problems))
    return pools
