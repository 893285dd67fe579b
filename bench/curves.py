"""Benchmark: accuracy-vs-compute curves replayed from a pool, vectorised vs a plain Python loop.

Synthetic, seeded pool of 1319 problems (GSM8K test size) x 64 samples: answers drawn from
per-problem Dirichlet distributions, log-normal token counts, confidences higher for correct
samples, DeepConf running-minimum breakpoints. Six strategies (sc, weighted-sc, best-of-n,
adaptive-consistency, esc, deepconf offline) plus pass@k, k = 1..64, over 200 random orders per
problem, with 95% two-level bootstrap bands (1000 draws).

Two plain-Python baselines do the same work, per order and problem, for the same strategies:
``loop`` (:func:`~thinktwice.eval.replay_loop.replay_prefixes`) replays each strategy afresh on
the first k samples for every budget k, as running the strategy once per budget would;
``incremental loop`` (:func:`~thinktwice.eval.replay_loop.replay_one`, the reference the tests
check the fast path against) carries the vote state from k to k + 1. Looping over all 200 x 1319
(order, problem) pairs would take hours, so each runs on a prefix of the same orders
(``--loop-pairs``, a tenth of that for the per-k loop) and is scaled linearly to the full count:
its cost per pair does not depend on which pair it is. The loops get no bootstrap; the
vectorised time includes it (and drawing the permutations), so the speedups are conservative.

    python bench/curves.py [--problems 1319] [--samples 64] [--perms 200] [--loop-pairs 400]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from thinktwice.eval.curves import parse_specs, pass_at_k_points, permutations, replay
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.replay_loop import replay_one, replay_prefixes, spec_weights

STRATEGIES = "sc,weighted-sc:self-certainty,best-of-n:self-certainty,adaptive-consistency,esc,deepconf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--loop-pairs", type=int, default=400, help="(order, problem) pairs the loop times")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console()
    P, N, B = args.problems, args.samples, args.perms
    pool = PoolData.synthetic(P, N, seed=args.seed, window=64)
    specs = parse_specs(STRATEGIES)

    # warm-up on a small pool (first-call overheads: imports, allocator)
    replay(PoolData.synthetic(8, N, seed=1), specs, n_perm=2, n_boot=10)

    t0, c0 = time.perf_counter(), time.process_time()
    curves = replay(pool, specs, n_perm=B, seed=args.seed, n_boot=args.n_boot, keep_correct=False)
    curves.append(pass_at_k_points(pool, n_boot=args.n_boot, seed=args.seed))
    fast, fast_cpu = time.perf_counter() - t0, time.process_time() - c0

    # the plain loop, on the first pairs of the same orders
    orders = permutations(P, N, B, args.seed)
    pairs = [(b, p) for b in range(B) for p in range(P)][: args.loop_pairs]
    def timed(fn, n_pairs: int) -> tuple[dict[str, float], float, float]:  # type: ignore[no-untyped-def]
        per, wall, cpu = {}, 0.0, 0.0
        for spec in specs:
            t1, c1 = time.perf_counter(), time.process_time()
            weights = spec_weights(pool, spec)  # once per strategy, as the vectorised replay does
            for b, p in pairs[:n_pairs]:
                fn(pool, spec, p, orders[b, p].tolist(), weights)
            scale = (B * P) / n_pairs
            per[spec.label] = (time.process_time() - c1) * scale
            wall += (time.perf_counter() - t1) * scale
            cpu += (time.process_time() - c1) * scale
        return per, wall, cpu

    per_spec, loop, loop_cpu = timed(replay_prefixes, max(1, len(pairs) // 10))
    per_inc, inc, inc_cpu = timed(replay_one, len(pairs))

    table = Table(title=f"curves: {P} problems x {N} samples x {B} orders, k = 1..{N}")
    for col in ("strategy", "acc@1", f"acc@{N}", f"tokens@{N}", "loop CPU s", "incremental loop CPU s"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for c in curves:
        table.add_row(c.label, f"{c.accuracy[0]:.3f}", f"{c.accuracy[-1]:.3f}", f"{c.tokens[-1]:.0f}",
                      f"{per_spec[c.label]:.0f}" if c.label in per_spec else "-",
                      f"{per_inc[c.label]:.0f}" if c.label in per_inc else "-")
    console.print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"vectorised (permutations + replay + bootstrap bands): {fast:.2f} s wall, {fast_cpu:.2f} s CPU; "
                  f"per-k loop: {loop:.0f} s wall, {loop_cpu:.0f} s CPU ({max(1, len(pairs) // 10)} pairs timed); "
                  f"incremental loop: {inc:.0f} s wall, {inc_cpu:.0f} s CPU ({len(pairs)} pairs timed); scaled "
                  f"linearly to {B * P} (order, problem) pairs. {os.cpu_count()} CPUs, load average {load:.1f} "
                  "(on a shared machine, CPU seconds are the steadier figure)")
    print(f"curves_seconds: {fast:.2f}")
    print(f"curves_cpu_seconds: {fast_cpu:.2f}")
    print(f"loop_seconds_scaled: {loop:.0f}")
    print(f"speedup_vs_loop: {loop / fast:.0f}")
    print(f"speedup_vs_loop_cpu: {loop_cpu / fast_cpu:.0f}")
    print(f"speedup_vs_incremental_loop_cpu: {inc_cpu / fast_cpu:.0f}")
    _ = np  # numpy is the engine; keep the import explicit for readers


if __name__ == "__main__":
    main()
