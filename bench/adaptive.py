"""Adaptive sampling against self-consistency@16 on one stored pool of samples (METHODS §6).

Replays self-consistency@16, Adaptive-Consistency (Beta rule 0.95), ESC (windows of 5) and
DeepConf online through :class:`thinktwice.lm.pool.PoolBackend`, with common random orders: for
each order every strategy sees the same sample stream, so accuracy differences are paired. Prints
accuracy, the paired difference against SC@16 with a bootstrap CI, and the share of SC@16's
samples and generated tokens each strategy used. Target: within 1 point of SC@16 with at most
40% of its generated tokens.

Where the pool comes from, in order of preference:
  --store S --run R          a stored run's samples (e.g. an eval run with -n 16)
  --backend B --task T       drawn live now (e.g. ``--backend organism --task arith``)
  (default)                  the organism on arith when its backend is installed, else a
                             synthetic pool (seeded; stated in the output)

Caps follow the pool: with 16 samples per problem the adaptive strategies stop at 16 (the
methods' default cap of 40 needs a larger pool), and DeepConf online warms up on 4 traces (its
paper default of 16 would spend SC@16's whole budget before deciding anything).

    python bench/adaptive.py
    python bench/adaptive.py --store runs.db --run 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from thinktwice.eval.matched import paired_difference, replay_strategy
from thinktwice.lm.pool import PoolSource
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.types import Problem, Prompt, Sample, SamplingParams, Usage

log = logging.getLogger("bench.adaptive")
err = Console(stderr=True)


# -- a synthetic pool: difficulty-varying answer distributions with confidence that tracks correctness --
@dataclass(frozen=True)
class SyntheticTask:
    """Answers are the word after '####'; the gold is 'A0'."""

    name: str = "synthetic"
    version: str = "1"
    prompt_version: str = "1"
    grader_version: str = "1"

    def extract(self, text: str) -> str | None:
        _, sep, tail = text.rpartition("####")
        return tail.strip() or None if sep else None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()

    def load(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, problem: Problem) -> Prompt:
        return Prompt.user(problem.question)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=256)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer is not None and answer.strip() == (problem.gold or "")


def synthetic_pool(n_problems: int, n: int, seed: int) -> tuple[list[Problem], dict[str, list[Sample]]]:
    """Per problem a correct-answer rate (easy / medium / hard mix) and three distractors; wrong
    traces are a little less confident and half of them hold a low-confidence stretch."""
    rng = random.Random(seed)
    problems, pools = [], {}
    for i in range(n_problems):
        r = rng.random()
        q = rng.uniform(0.7, 1.0) if r < 0.5 else rng.uniform(0.3, 0.7) if r < 0.8 else rng.uniform(0.0, 0.3)
        w = [rng.random() for _ in range(3)]
        probs = [q] + [(1 - q) * x / sum(w) for x in w]
        pid = f"s{i}"
        problems.append(Problem(pid, f"synthetic problem {i}", gold="A0"))
        samples = []
        for _ in range(n):
            a = rng.choices(range(4), probs)[0]
            length = rng.randint(30, 80)
            base = rng.uniform(0.75, 0.95) if a == 0 else rng.uniform(0.6, 0.9)
            confs = [min(0.99, max(0.05, rng.gauss(base, 0.05))) for _ in range(length)]
            if a != 0 and rng.random() < 0.5:
                start = rng.randrange(0, length - 8)
                for j in range(start, start + 8):
                    confs[j] = rng.uniform(0.2, 0.4)
            words = [" step"] * (length - 2) + [" ####", f" A{a}"]
            toks = tuple(synthetic_stat(t, c, 1000, 5) for t, c in zip(words, confs))
            samples.append(Sample("".join(words), toks, usage=Usage(1, 40, 0, length), model="synthetic"))
        pools[pid] = samples
    return problems, pools


def store_pool(path: str, run_id: int) -> tuple[object, list[Problem], dict[str, list[Sample]]]:
    import thinktwice.tasks  # noqa: F401
    from thinktwice.eval.store import RunStore
    from thinktwice.registry import tasks

    if not Path(path).exists():
        raise SystemExit(f"no run store at {path}")
    with RunStore(path) as st:
        info = st.get_run(run_id)
        problems = st.problems(run_id)
        source = PoolSource.from_store(st, run_id)
    task = tasks.create(info.task, **info.config.get("task_options", {}))
    return task, [p for p in problems if p.id in source], source.pools


async def live_pool(backend_spec: str, task_name: str, limit: int, n: int, seed: int,  # type: ignore[no-untyped-def]
                    temperature: float):
    import thinktwice.tasks  # noqa: F401
    from thinktwice import lm
    from thinktwice.eval.matched import draw_pool
    from thinktwice.registry import tasks

    if task_name in tasks:
        task = tasks.create(task_name)
    elif task_name == "arith":  # the organism's task, before its registry line lands
        from thinktwice.tasks.arith import ArithTask

        task = ArithTask()
    else:
        task = tasks.create(task_name)  # raises the registry's "did you mean"
    problems = list(task.load("test", limit=limit))
    backend = lm.create(backend_spec)
    try:
        pools = await draw_pool(task, backend, problems, n, seed=seed, temperature=temperature)
    finally:
        await backend.aclose()
    return task, problems, pools


# -- the replay ----------------------------------------------------------------------------------------
async def run(task, problems: Sequence[Problem], pools, n: int, orders: int, window: int) -> list[dict]:  # type: ignore[no-untyped-def]
    from thinktwice.strategies import create_strategy

    source = PoolSource(pools)
    size = source.min_size()
    if size < n:
        raise SystemExit(f"the pool holds {size} samples for some problem; {n} are needed")
    seeds = list(range(orders))
    specs = {
        f"self-consistency@{n}": create_strategy("self-consistency", n=n),
        "adaptive-consistency": create_strategy("adaptive-consistency", max_samples=n),
        "esc": create_strategy("esc", max_samples=n - n % 5 if n >= 5 else n, window=min(5, n)),
        "deepconf-online": create_strategy("deepconf-online", warm_up=min(4, n), max_samples=n, window=window,
                                           batch=4),
    }
    results = {}
    for name, strat in specs.items():
        t0 = time.perf_counter()
        results[name] = await replay_strategy(strat, source, task, problems, seeds=seeds)
        err.print(f"{name}: replayed {len(problems)} x {orders} in {time.perf_counter() - t0:.1f}s")
    base = results[f"self-consistency@{n}"]
    rows = []
    for name, r in results.items():
        d = paired_difference(r.accuracy, base.accuracy)
        rows.append({
            "name": name, "acc": r.mean_accuracy, "delta": d.delta, "lo": d.lo, "hi": d.hi,
            "samples": r.samples_per_problem, "sample_share": r.samples_per_problem / base.samples_per_problem,
            "tokens": r.per_problem("completion_tokens"),
            "token_share": r.per_problem("completion_tokens") / base.per_problem("completion_tokens"),
            "calls": r.per_problem("calls"), "prompt": r.per_problem("prompt_tokens"),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store"), ap.add_argument("--run", type=int)
    ap.add_argument("--backend"), ap.add_argument("--task", default="arith")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--orders", type=int, default=5, help="common random orders of each pool")
    ap.add_argument("--window", type=int, default=8, help="DeepConf group window (short traces here)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of a live pool")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    source = "synthetic"
    if a.store and a.run is not None:
        task, problems, pools = store_pool(a.store, a.run)
        source = f"store run {a.run}"
    else:
        task = None
        spec = a.backend or "organism"
        try:
            task, problems, pools = asyncio.run(live_pool(spec, a.task, a.problems, a.n, a.seed, a.temperature))
            source = f"{spec} on {a.task}, T={a.temperature}, drawn now"
        except Exception as e:
            if a.backend:
                raise
            err.print(f"[yellow]organism pool unavailable ({type(e).__name__}: {e}); using a synthetic pool")
        if task is None:
            task = SyntheticTask()
            problems, pools = synthetic_pool(a.problems, a.n, a.seed)
    rows = asyncio.run(run(task, problems, pools, a.n, a.orders, a.window))
    table = Table(title=f"adaptive sampling vs SC@{a.n}: {len(problems)} problems, pool: {source}, "
                        f"{a.orders} orders")
    for col in ("strategy", "accuracy", "Δ vs SC [95% CI]", "samples", "sample share", "gen tokens",
                "token share", "calls", "prompt tokens"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['acc']:.4f}", f"{r['delta']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]",
                      f"{r['samples']:.2f}", f"{r['sample_share']:.3f}", f"{r['tokens']:.1f}",
                      f"{r['token_share']:.3f}", f"{r['calls']:.2f}", f"{r['prompt']:.0f}")
    if source == "synthetic":
        table.caption = ("synthetic pool: wrong traces are built less confident (and half hold a low-confidence "
                         "stretch), so DeepConf's gain here is by construction, not evidence")
    Console(width=160).print(table)
    print(f"pool: {source}")
    by = {r["name"]: r for r in rows}
    for key, name in (("adaptive", "adaptive-consistency"), ("esc", "esc"), ("deepconf", "deepconf-online")):
        r = by[name]
        print(f"{key}_acc_delta: {r['delta']:+.4f}")
        print(f"{key}_sample_share: {r['sample_share']:.3f}")
        print(f"{key}_token_share: {r['token_share']:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
