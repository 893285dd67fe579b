"""The organism demo: greedy, self-consistency, adaptive-consistency and self-certainty best-of-N on
held-out arithmetic problems, each beside self-consistency at the same generated tokens.

"The same" is exact (METHODS §1.5): the baseline is SC@k, or the mixture of SC@k and SC@(k+1) whose
expected tokens equal the row's, with SC@k's tokens taken from the replayed curve (the pool's mean
tokens of the first k samples over the orders); see :mod:`thinktwice.eval.matched`.

Sampling is done once: greedy runs live (one call per problem), and one call of ``n`` samples per
problem draws a pool that self-consistency@n itself would have drawn. Every sampling strategy is
then replayed against that pool (:class:`~thinktwice.lm.pool.PoolBackend`, billed for the samples
it is served), over several seeded orders, so all of them see the same samples (common random
numbers) and the compute-matched baseline costs no extra calls (METHODS §1.5).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ThinktwiceError
from thinktwice.eval.matched import match_sc, paired_difference, replay_strategy
from thinktwice.eval.stats import bootstrap_ci
from thinktwice.lm.base import Backend
from thinktwice.lm.pool import PoolSource
from thinktwice.registry import strategies
from thinktwice.tasks.base import Query, Task
from thinktwice.types import Problem, Sample, Usage

__all__ = ["DEMO_STRATEGIES", "DemoResult", "DemoRow", "plot_demo", "run_demo"]

DEMO_STRATEGIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("adaptive-consistency", "adaptive-consistency", {}),
    ("best-of-{n} self-certainty", "best-of-n", {"signal": "self-certainty"}),
    ("best-of-{n} mean-logprob", "best-of-n", {"signal": "mean-logprob"}),
)
"""(row label, registry name, options) of the replayed strategies besides self-consistency."""


@dataclass(frozen=True)
class DemoRow:
    """One strategy's accuracy and compute per problem, with the compute-matched SC baseline."""

    name: str
    accuracy: float
    lo: float
    hi: float
    calls: float  # model calls per problem
    tokens: float  # generated tokens per problem
    matched_k: int | None = None  # the baseline's SC size (the smaller one of a mixture)
    matched_accuracy: float | None = None
    matched_weight: float = 0.0  # probability of SC@(matched_k + 1) in the mixture
    matched_tokens: float | None = None  # the baseline's own generated tokens per problem
    matched_label: str | None = None  # "SC@4" or "SC@4/5 mix w=0.37"
    matched_capped: bool = False  # the pool is too small: the baseline spends fewer tokens
    delta: float | None = None  # accuracy - matched SC accuracy (paired by problem)
    delta_lo: float | None = None
    delta_hi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DemoResult:
    rows: list[DemoRow]
    sc_curve: list[tuple[int, float, float]]  # (k, generated tokens per problem, accuracy)
    problems: int
    tokens_per_sample: float
    skipped: list[str] = field(default_factory=list)
    pass_at_n: float = math.nan


Progress = Callable[[str, int, int], None]


def _row(name: str, per_problem: Sequence[float], usage: Usage, denom: int, seed: int) -> DemoRow:
    acc = np.asarray(per_problem, dtype=float)
    lo, hi = bootstrap_ci(acc, seed=seed) if acc.size > 1 else (math.nan, math.nan)
    return DemoRow(name, float(acc.mean()), lo, hi, usage.calls / denom, usage.completion_tokens / denom)


def _matched(row: DemoRow, per_problem: Sequence[float], sc_by_k: dict[int, tuple[float, ...]],
             sc_tokens: Sequence[float], seed: int) -> DemoRow:
    m = match_sc(row.tokens, sc_tokens)
    base = m.interpolate(sc_by_k)
    d = paired_difference(per_problem, base, seed=seed)
    return DemoRow(**{**row.to_dict(), "matched_k": m.k, "matched_accuracy": float(np.mean(base)),
                      "matched_weight": m.weight, "matched_tokens": m.tokens, "matched_label": m.label,
                      "matched_capped": m.capped, "delta": d.delta, "delta_lo": d.lo, "delta_hi": d.hi})


async def run_demo(
    backend: Backend,
    task: Task,
    problems: Sequence[Problem],
    *,
    n: int = 16,
    temperature: float = 0.8,
    seed: int = 0,
    orders: int = 4,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo (see the module docstring); ``orders`` seeded pool orders per replay."""
    from thinktwice.eval.runner import problem_seed
    from thinktwice.strategies.greedy import Greedy
    from thinktwice.strategies.self_consistency import SelfConsistency

    m = len(problems)
    greedy_ok: list[float] = []
    greedy_usage = Usage()
    pools: dict[str, list[Sample]] = {}
    sc_n = SelfConsistency(n=n, temperature=temperature, batch=n)
    for i, p in enumerate(problems):  # the backend runs one call at a time anyway
        q = Query.from_task(task, p)
        d = await Greedy().run(q, backend, seed=problem_seed(seed, p.id))
        greedy_ok.append(float(task.grade(d.answer, p)))
        greedy_usage = greedy_usage + d.usage
        d = await sc_n.run(q, backend, seed=problem_seed(seed, p.id))
        pools[p.id] = [c.sample for c in d.candidates]
        if progress is not None:
            progress("sampling", i + 1, m)
    source = PoolSource(pools, model=getattr(backend, "model", "pool"))
    t = source.mean_completion_tokens()
    pass_n = float(np.mean([any(task.grade(task.extract(s.text), p) for s in pools[p.id]) for p in problems]))

    seeds = tuple(range(orders))
    sc_by_k: dict[int, tuple[float, ...]] = {}
    sc_rows: dict[int, tuple[DemoRow, tuple[float, ...]]] = {}
    curve: list[tuple[int, float, float]] = []
    for k in range(1, n + 1):
        r = await replay_strategy(SelfConsistency(n=k, temperature=temperature, batch=n), source, task, problems,
                                  seeds=seeds if k < n else (0,))
        sc_by_k[k] = r.accuracy
        row = _row(f"self-consistency@{k}", r.accuracy, r.usage, m * r.orders, seed)
        sc_rows[k] = (row, r.accuracy)
        curve.append((k, row.tokens, row.accuracy))
        if progress is not None:
            progress("replay", k, n)

    sc_tokens = [tok for _, tok, _ in curve]  # SC@k's own tokens, k = 1..n, from the pool
    rows = [_matched(_row("greedy", greedy_ok, greedy_usage, m, seed), greedy_ok, sc_by_k, sc_tokens, seed)]
    rows.append(_matched(sc_rows[n][0], sc_rows[n][1], sc_by_k, sc_tokens, seed))
    skipped: list[str] = []
    for label, name, opts in DEMO_STRATEGIES:
        label = label.format(n=n)
        if name not in strategies:
            skipped.append(f"{label}: strategy {name!r} is not registered")
            continue
        options = {**opts, "temperature": temperature}
        options.update({"max_samples": n} if name == "adaptive-consistency" else {"n": n})
        try:
            strat = strategies.create(name, **options)
            r = await replay_strategy(strat, source, task, problems, seeds=seeds)
        except ThinktwiceError as e:  # a strategy that cannot run here is reported, not fatal
            skipped.append(f"{label}: {type(e).__name__}: {e}")
            continue
        rows.append(_matched(_row(label, r.accuracy, r.usage, m * r.orders, seed), r.accuracy, sc_by_k,
                             sc_tokens, seed))
    return DemoResult(rows, curve, m, t, skipped, pass_n)


def plot_demo(result: DemoResult, path: str | Path, title: str = "") -> Path:
    """Accuracy vs generated tokens per problem: the self-consistency curve and each strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ks, xs, ys = zip(*result.sc_curve)
    ax.plot(xs, ys, "-o", color="0.45", ms=3, label=f"self-consistency@k (k=1..{ks[-1]})")
    markers = iter("sD^vP*X")
    for r in result.rows:
        if r.name.startswith("self-consistency"):
            continue
        ax.errorbar([r.tokens], [r.accuracy], yerr=[[r.accuracy - r.lo], [r.hi - r.accuracy]],
                    fmt=next(markers, "o"), ms=7, capsize=3, label=r.name)
    if not math.isnan(result.pass_at_n):
        ax.axhline(result.pass_at_n, ls=":", color="0.6", label=f"pass@{ks[-1]} (oracle)")
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"organism: {result.problems} held-out problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.93))
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def run_demo_sync(*args: Any, **kwargs: Any) -> DemoResult:
    return asyncio.run(run_demo(*args, **kwargs))
