"""``thinktwice compare``: several strategies on one task, each next to self-consistency at its own
measured generated tokens (METHODS §1.5), in one table.

The baseline spends exactly the strategy's generated tokens ``G`` per problem, never fewer: with
``T(k)`` the pool's mean tokens of SC@k (the first k samples of each seeded order), it is SC@k
when ``G = T(k)`` and otherwise the mixture of SC@k and SC@(k+1) with weight ``w`` on SC@(k+1)
such that ``(1 - w) T(k) + w T(k+1) = G``, its accuracy interpolated per problem
(:mod:`thinktwice.eval.matched`). Its own tokens are printed beside the strategy's; when the pool
(or ``--max-k``) caps it below ``G`` the row is marked.

Live (default): each strategy runs through the eval harness. The matched baselines come from one
pool of self-consistency samples drawn once per problem: first one sample per problem (which
estimates the tokens per sample), then enough to cover the largest strategy's tokens; each
baseline is replayed from that pool over ``--orders`` seeded orders, and the difference is paired
by problem with a bootstrap interval.

Offline (``--pool-run R``): the strategies *and* their baselines are replayed from the stored
samples of run R with common random orders, so the comparison is paired sample by sample and no
model is called. Only strategies that sample the problem's own prompt can be replayed (voting,
selection, adaptive stopping, DeepConf); the others are refused with a clear error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from thinktwice.cli.common import (
    ApiKeyOpt,
    BackendOpt,
    BackendOptionsOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    ModelOpt,
    SeedOpt,
    SplitOpt,
    StoreOpt,
    TaskOptionsOpt,
    backend_from_options,
    default_store,
    err,
    limit_option,
    out,
    parse_kv,
    positive,
    run_async,
)
from thinktwice.errors import ConfigError

__all__ = ["register", "run_compare"]


def _specs(strategies: str) -> list[str]:
    specs = [s.strip() for s in strategies.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--strategies needs at least one strategy name, e.g. adaptive-consistency,esc")
    return specs


async def run_compare(
    task: Any, problems: list[Any], specs: list[str], backend: Any, *, budget_tokens: int | None = None,
    seed: int = 0, orders: int = 4, max_k: int = 64, concurrency: int = 16, store: Any = None,
    config: dict[str, Any] | None = None, pool: Any = None,
) -> list[dict[str, Any]]:
    """Run every strategy, then its matched SC baseline; one result row (a dict) per strategy.

    With ``pool`` (a PoolSource) everything is replayed from it and ``backend`` is not used.
    """
    if pool is not None:
        return await _compare_offline(task, problems, specs, pool, budget_tokens=budget_tokens, seed=seed,
                                      orders=orders, max_k=max_k)
    from thinktwice.errors import BackendError
    from thinktwice.eval.matched import draw_pool, matched_baseline, paired_difference, pool_sc_tokens
    from thinktwice.eval.runner import evaluate
    from thinktwice.eval.stats import wilson_ci
    from thinktwice.eval.store import DONE, WITH_FAILURES
    from thinktwice.lm.pool import PoolSource
    from thinktwice.strategies import create_strategy
    from thinktwice.types import Budget, Usage

    strategies = [create_strategy(s) for s in specs]  # fail on a bad name before any model call
    budget = Budget(max_tokens=budget_tokens) if budget_tokens else None
    measured = []
    for spec, strat in zip(specs, strategies):
        run_id = None
        if store is not None:
            run_id = store.create_run(kind="eval", config={**(config or {}), "strategy": spec}, task=task.name,
                                      task_version=getattr(task, "version", None), backend=getattr(backend, "name", ""),
                                      model=getattr(backend, "model", None), strategy=spec, seed=seed)
            store.put_problems(run_id, problems)
        err.print(f"running {spec} on {len(problems)} problems")
        res = await evaluate(task, strat, backend, problems, store=store, run_id=run_id, budget=budget,
                             concurrency=concurrency, seed=seed)
        if store is not None:
            store.set_status(run_id, DONE if res.failed == 0 else WITH_FAILURES)
        measured.append((spec, res, run_id))

    # a problem that failed for any strategy (or for the baseline's pool) is left out of every comparison:
    # counting it as wrong, at zero tokens, would bias both the accuracy and the matched budget
    failed = {r.problem_id for _, res, _ in measured for r in res.rows if r.error is not None}
    err.print("drawing the self-consistency pool for the matched baselines")
    pools = await draw_pool(task, backend, [p for p in problems if p.id not in failed], 1, seed=seed + 1,
                            concurrency=concurrency)
    failed |= {p.id for p in problems if p.id not in pools}
    problems = [p for p in problems if p.id not in failed]
    if not problems:
        raise BackendError(f"every problem failed in a strategy or the baseline pool ({len(failed)} problems)")
    pools = {p.id: pools[p.id] for p in problems}
    n = len(problems)
    seeds = [seed + i for i in range(orders)]
    per_strategy = []
    for spec, res, run_id in measured:
        by_id = {r.problem_id: r for r in res.rows}
        correct = [float(bool(by_id[p.id].correct)) for p in problems]
        usage = Usage.total([by_id[p.id].usage for p in problems])
        per_strategy.append((spec, res, correct, usage, run_id))
    want = max(u.completion_tokens / n for _, _, _, u, _ in per_strategy)
    t = PoolSource(pools).mean_completion_tokens() or 1.0
    need = min(max_k, max(1, math.ceil(want / t) + 1))  # one more than k*t suggests: samples vary in length
    for round_ in range(2, 6):  # grow the pool until SC at its size covers the largest strategy
        have = min(len(v) for v in pools.values())
        if need > have:
            more = await draw_pool(task, backend, problems, need - have, seed=seed + round_, concurrency=concurrency)
            pools = {pid: pools[pid] + more.get(pid, []) for pid in pools}
            have = min(len(v) for v in pools.values())  # a problem whose extra draw failed keeps fewer
        sc_tokens = await pool_sc_tokens(PoolSource(pools), task, problems, seeds=seeds, k_max=have)
        if sc_tokens[-1] >= want or have >= max_k:
            break
        need = min(max_k, have + math.ceil((want - sc_tokens[-1]) / t) + 1)
    source = PoolSource(pools)
    rows = []
    for spec, res, correct, u, run_id in per_strategy:
        match, base = await matched_baseline(u.completion_tokens / n, source, task, problems, seeds=seeds,
                                             sc_tokens=sc_tokens)
        diff = paired_difference(correct, base, seed=seed)
        lo, hi = wilson_ci(int(sum(correct)), len(correct))
        rows.append({
            "strategy": spec, "run": run_id, "n": len(correct), "accuracy": sum(correct) / n, "ci95": [lo, hi],
            "gen_tokens": u.completion_tokens / n, "prompt_tokens": u.prompt_tokens / n, "calls": u.calls / n,
            "failed": res.failed, "excluded": len(failed), "tokens_per_sample": t, **_matched_fields(match, base),
            "delta": diff.delta, "delta_ci95": [diff.lo, diff.hi],
        })
    return rows


def _matched_fields(match: Any, base: Any) -> dict[str, Any]:
    """The baseline's columns of a result row: its sizes, mixture weight, own tokens, cap flag."""
    import numpy as np

    return {"matched_k": match.k, "matched_weight": match.weight, "matched_label": match.label,
            "matched_gen_tokens": match.tokens, "matched_capped": match.capped, "matched_note": match.note,
            "matched_accuracy": float(np.mean(base)) if len(base) else math.nan}


async def _compare_offline(
    task: Any, problems: list[Any], specs: list[str], source: Any, *, budget_tokens: int | None, seed: int,
    orders: int, max_k: int,
) -> list[dict[str, Any]]:
    from thinktwice.eval.matched import matched_baseline, paired_difference, pool_sc_tokens, replay_strategy
    from thinktwice.eval.stats import bootstrap_ci
    from thinktwice.strategies import create_strategy
    from thinktwice.types import Budget

    strategies = [create_strategy(s) for s in specs]
    budget = Budget(max_tokens=budget_tokens) if budget_tokens else None
    seeds = [seed + i for i in range(orders)]
    t = source.mean_completion_tokens() or 1.0
    cap = max(1, min(max_k, source.min_size()))
    sc_tokens = await pool_sc_tokens(source, task, problems, seeds=seeds, k_max=cap)
    rows = []
    for spec, strat in zip(specs, strategies):
        err.print(f"replaying {spec} on {len(problems)} problems x {orders} orders")
        res = await replay_strategy(strat, source, task, problems, seeds=seeds, budget=budget)
        match, base = await matched_baseline(res.per_problem("completion_tokens"), source, task, problems,
                                             seeds=seeds, sc_tokens=sc_tokens)
        diff = paired_difference(res.accuracy, base, seed=seed)
        lo, hi = bootstrap_ci(res.accuracy, seed=seed)
        rows.append({
            "strategy": spec, "run": None, "n": len(problems), "accuracy": res.mean_accuracy, "ci95": [lo, hi],
            "gen_tokens": res.per_problem("completion_tokens"), "prompt_tokens": res.per_problem("prompt_tokens"),
            "calls": res.per_problem("calls"), "failed": 0, "excluded": 0, "tokens_per_sample": t,
            **_matched_fields(match, base),
            "delta": diff.delta, "delta_ci95": [diff.lo, diff.hi],
        })
    return rows


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("strategy", "accuracy ± 95% CI", "gen tok/problem", "prompt tok/problem", "calls/problem",
                "matched SC", "SC gen tok/problem", "matched SC acc", "Δ vs matched [95% CI]"):
        table.add_column(col, justify="left" if col in ("strategy", "matched SC") else "right")
    for r in rows:
        lo, hi = r["ci95"]
        dlo, dhi = r["delta_ci95"]
        colour = "green" if dlo > 0 else "red" if dhi < 0 else "white"
        mark = " *" if r["matched_capped"] else ""
        table.add_row(
            escape(r["strategy"]), f"{r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]", f"{r['gen_tokens']:.0f}",
            f"{r['prompt_tokens']:.0f}", f"{r['calls']:.1f}", escape(r["matched_label"]),
            f"{r['matched_gen_tokens']:.0f}{mark}", f"{r['matched_accuracy']:.3f}",
            f"[{colour}]{r['delta']:+.3f} [{dlo:+.3f}, {dhi:+.3f}]",
        )
    if rows:
        caption = ("matched SC: self-consistency at the strategy's generated tokens, SC@k or the SC@k/k+1 mixture "
                   "with weight w on SC@(k+1) (tokens of SC@k from the pool), replayed from one pool; "
                   "Δ paired by problem")
        if rows[0].get("excluded"):
            caption += (f"\n{rows[0]['excluded']} problem(s) failed in some strategy or in the baseline's pool and are "
                        "left out of every row (`thinktwice show RUN` lists the errors)")
        if any(r["matched_capped"] for r in rows):
            caption += ("\n* capped at the pool size: this baseline spends FEWER tokens than the strategy "
                        "(draw a larger pool or raise --max-k)")
        table.caption = caption
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        task: str = typer.Option("gsm8k", "--task", "-t", help="Task name."),
        strategies: str = typer.Option(..., "--strategies", "-S",
                                       help="Comma-separated strategy specs, e.g. adaptive-consistency,esc,best-of-n:path-prob"),
        limit: int | None = limit_option(help="Compare on the first N problems."),
        split: str = SplitOpt,
        task_options: list[str] | None = TaskOptionsOpt,
        backend: str = BackendOpt,
        backend_options: list[str] | None = BackendOptionsOpt,
        base_url: str | None = BaseUrlOpt,
        api_key: str | None = ApiKeyOpt,
        model: str | None = ModelOpt,
        store: Path | None = StoreOpt,
        concurrency: int = ConcurrencyOpt,
        seed: int = SeedOpt,
        budget_tokens: int | None = typer.Option(None, "--budget-tokens", help="Generated-token budget per problem.",
                                                   callback=positive("--budget-tokens")),
        orders: int = typer.Option(4, "--orders", help="Pool orders averaged for each matched baseline."),
        max_k: int = typer.Option(64, "--max-k", help="Largest matched self-consistency size."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
        pool_run: int | None = typer.Option(None, "--pool-run",
                                            help="Replay everything offline from this stored run's samples."),
    ) -> None:
        """Compare strategies, each against self-consistency at its own generated tokens."""
        import os

        from thinktwice.registry import tasks

        specs = _specs(strategies)
        if orders < 1 or max_k < 1:
            raise ConfigError("--orders and --max-k must be >= 1")
        t = tasks.create(task, **parse_kv(task_options))
        if pool_run is not None:
            rows = _offline(t, task, specs, default_store(store), pool_run, limit, budget_tokens, seed, orders, max_k)
            _emit(rows, json_out, f"{task}: run {pool_run}'s pool, replayed offline")
            return
        problems = list(t.load(split, limit=limit))
        if not problems:
            raise ConfigError(f"task {task!r} has no problems in split {split!r}")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        b = backend_from_options(backend, base_url=base_url, api_key=key, model=model, concurrency=concurrency,
                                 **parse_kv(backend_options))
        config = {"task": task, "split": split, "limit": limit, "backend": backend, "seed": seed,
                  "budget_tokens": budget_tokens, "compare": specs}

        async def go(st: Any) -> list[dict[str, Any]]:
            try:
                return await run_compare(t, problems, specs, b, budget_tokens=budget_tokens, seed=seed,
                                         orders=orders, max_k=max_k, concurrency=concurrency, store=st,
                                         config=config)
            finally:
                await b.aclose()

        if store is not None:
            from thinktwice.eval.store import RunStore

            with RunStore(store) as st:
                rows = run_async(go(st))
        else:
            rows = run_async(go(None))
        _emit(rows, json_out, f"{task}: {len(problems)} problems, backend {backend}")
        if any(r["excluded"] for r in rows):
            err.print(f"[yellow]{rows[0]['excluded']} problem(s) failed and were left out of the comparison")
            raise typer.Exit(1)


def _emit(rows: list[dict[str, Any]], json_out: bool, title: str) -> None:
    import json

    if json_out:
        out.print_json(json.dumps(rows))
    else:
        _print_rows(rows, title)


def _offline(task: Any, task_name: str, specs: list[str], store_path: Path, run_id: int, limit: int | None,
             budget_tokens: int | None, seed: int, orders: int, max_k: int) -> list[dict[str, Any]]:
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.pool import PoolSource

    if not store_path.exists():
        raise ConfigError(f"no run store at {store_path}; pass --store")
    with RunStore(store_path) as st:
        info = st.get_run(run_id)
        if info.task != task_name:
            raise ConfigError(f"run {run_id} holds samples of task {info.task!r}, not {task_name!r}; pass --task {info.task}")
        source = PoolSource.from_store(st, run_id)
        problems = [p for p in st.problems(run_id) if source.size(p.id) > 0][:limit]
    if not problems:
        raise ConfigError(f"run {run_id} has no stored samples to replay")
    return run_async(run_compare(task, problems, specs, None, budget_tokens=budget_tokens, seed=seed,
                                 orders=orders, max_k=max_k, pool=source))
