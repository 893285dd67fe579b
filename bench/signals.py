"""Benchmark the token signals: time to score 1000 candidates, and AUROC of each on a pool.

    python bench/signals.py                          # synthetic pool
    python bench/signals.py --store runs.db --run 3  # AUROC on a stored run (its graded samples)
    python bench/signals.py --organism               # AUROC on a fresh pool of the shipped organism

Timing: 1000 candidates x 256 tokens with top-5 alternatives and full-distribution entropy /
self-certainty (synthetic TokenStats), scored with all nine token signals two ways: each signal on
its own (every signal converts the tokens to arrays again: the baseline) and through
``score_token_signals`` (one conversion shared by all). Target: < 1 s for the shared path.

AUROC (correct vs incorrect, pooled over candidates) comes from a stored run when given; otherwise
from a seeded synthetic pool in which a latent per-sample quality drives both correctness and
token confidence, so every signal should land above 0.5.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from thinktwice.eval.calibration import auroc, auroc_within
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.signals.confidence import TOKEN_SIGNALS, score_token_signals
from thinktwice.types import Candidate, Sample

console = Console()


def synthetic_pool(n_problems: int, n_samples: int, n_tokens: int, seed: int = 0) -> tuple[list[list[Candidate]], list[list[bool]]]:
    """Problems x samples of candidates; quality q ~ U(0,1) sets P(correct) = q and token confidence."""
    rng = np.random.default_rng(seed)
    pools, labels = [], []
    # a cache of TokenStats on a grid of confidences keeps construction fast (values are exact per grid point)
    grid = np.round(np.linspace(0.05, 0.99, 95), 2)
    stats = {float(c): synthetic_stat(" t", float(c), 50_000, 5) for c in grid}
    for _ in range(n_problems):
        difficulty = rng.uniform(-0.3, 0.3)
        cands, ys = [], []
        for _ in range(n_samples):
            q = float(np.clip(rng.uniform() + difficulty, 0, 1))
            correct = bool(rng.uniform() < q)
            conf = np.clip(0.55 + 0.4 * q + rng.normal(0, 0.15, n_tokens), 0.05, 0.99)
            toks = tuple(stats[float(c)] for c in np.round(conf, 2))
            answer = "42" if correct else str(int(rng.integers(0, 3)))
            cands.append(Candidate(Sample("".join(t.token for t in toks), tokens=toks), answer))
            ys.append(correct)
        pools.append(cands)
        labels.append(ys)
    return pools, labels


def stored_pool(store: str, run: int) -> tuple[list[list[Candidate]], list[list[bool]]]:
    from thinktwice.eval.signal_eval import load_pools
    from thinktwice.eval.store import RunStore

    with RunStore(store, readonly=True) as st:
        pools = load_pools(st, run)
    return [list(p.candidates) for p in pools], [list(p.labels) for p in pools]


def organism_pool(problems: int, n: int, seed: int) -> tuple[list[list[Candidate]], list[list[bool]]]:
    """Draw a fresh pool from the shipped organism checkpoint on the arith task (temporary store)."""
    import asyncio
    import tempfile
    from pathlib import Path

    from thinktwice import lm
    from thinktwice.eval.signal_eval import draw_pool
    from thinktwice.eval.store import RunStore
    from thinktwice.registry import tasks

    task = tasks.create("arith")
    backend = lm.create("organism")
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "pool.db")
        with RunStore(path) as st:
            async def go() -> int:
                try:
                    return await draw_pool(task, backend, list(task.load("test", limit=problems)), st, n=n, seed=seed)
                finally:
                    await backend.aclose()

            rid = asyncio.run(go())
        return stored_pool(path, rid)


def time_scoring(cands: list[Candidate], repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` seconds: each signal alone (baseline) and all through one shared conversion."""
    sigs = [cls() for cls in TOKEN_SIGNALS]
    alone, shared = math.inf, math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in sigs:
            s.score_sync(cands)
        alone = min(alone, time.perf_counter() - t0)
        t0 = time.perf_counter()
        score_token_signals(cands, sigs)
        shared = min(shared, time.perf_counter() - t0)
    return alone, shared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="run store (SQLite) holding the run")
    ap.add_argument("--run", type=int, help="run id whose graded samples give the AUROC pool")
    ap.add_argument("--organism", action="store_true", help="draw a fresh organism pool (arith task) for the AUROC")
    ap.add_argument("--problems", type=int, default=100, help="organism pool: problems")
    ap.add_argument("-n", type=int, default=16, help="organism pool: samples per problem")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per synthetic candidate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    timing_pools, timing_labels = synthetic_pool(125, 8, args.tokens, args.seed)
    cands = [c for p in timing_pools for c in p]
    console.print(f"built {len(cands)} synthetic candidates x {args.tokens} tokens in {time.perf_counter() - t0:.1f} s",
                  style="dim")
    alone, shared = time_scoring(cands)

    if args.store and args.run is not None:
        pools, labels = stored_pool(args.store, args.run)
        source = f"run {args.run} of {args.store}"
    elif args.organism:
        t1 = time.perf_counter()
        pools, labels = organism_pool(args.problems, args.n, args.seed)
        source = f"organism on arith ({args.problems} problems x {args.n}, drawn in {time.perf_counter() - t1:.0f} s)"
    else:
        pools, labels = timing_pools, timing_labels
        source = "synthetic pool (125 problems x 8 samples)"
    y = np.array([v for ys in labels for v in ys], dtype=bool)
    groups = np.array([str(i) for i, ys in enumerate(labels) for _ in ys])
    all_cands = [c for p in pools for c in p]
    missed: list[str] = []
    scores = score_token_signals(all_cands, on_missing=lambda s, e: missed.append(s.name))

    t = Table(title=f"token signals: 1000 candidates x {args.tokens} tokens (top-5)")
    t.add_column("scoring path")
    t.add_column("seconds", justify="right")
    t.add_row("each signal converts its own arrays (baseline)", f"{alone:.3f}")
    t.add_row("one shared conversion (score_token_signals)", f"{shared:.3f}")
    console.print(t)

    a = Table(title=f"AUROC, correct vs incorrect: {source}; n={y.size}, accuracy {y.mean():.3f}")
    a.add_column("signal")
    a.add_column("AUROC pooled", justify="right")
    a.add_column("AUROC within problem", justify="right")
    results = {}
    for name, s in scores.items():
        ok = ~np.isnan(s)
        results[name] = auroc(s[ok], y[ok])
        a.add_row(name, f"{results[name]:.3f}", f"{auroc_within(s[ok], y[ok], groups[ok]):.3f}")
    for name in missed:
        a.add_row(name, "n/a (inputs missing)", "")
    console.print(a)
    print(f"score_1000_seconds: {shared:.4f}")
    print(f"score_1000_seconds_baseline: {alone:.4f}")
    for name, v in results.items():
        print(f"auroc_{name}: {v:.4f}")


if __name__ == "__main__":
    main()
