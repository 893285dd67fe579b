"""``thinktwice eval``: run a strategy over a task, store every decision, print accuracy and compute."""

from __future__ import annotations

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
    StrategyOptionsOpt,
    TaskOptionsOpt,
    backend_from_options,
    default_store,
    err,
    limit_option,
    out,
    parse_kv,
    positive,
    progress_bar,
    run_async,
    stored_config,
)
from thinktwice.cli.scale import (
    RayCpusOpt,
    RayGpusOpt,
    RayOpt,
    RayOptionCommand,
    RayWorkersOpt,
    ShardsOpt,
    ray_config,
)
from thinktwice.errors import ConfigError

__all__ = ["register", "run_eval"]


def _budget(tokens: int | None, calls: int | None) -> Any:
    from thinktwice.types import Budget

    return Budget(max_tokens=tokens, max_calls=calls) if (tokens or calls) else None


def run_eval(spec: dict[str, Any], *, store_path: Path, resume: int | None, api_key: str | None,
             show_rows: int = 50, json_out: bool = False, ray: Any = None) -> tuple[int, int]:
    """Build everything from ``spec``, run (or resume) the eval, print the report; returns the run id and
    the number of failed problems (the run's status is then ``completed-with-failures``).

    With ``ray`` (a :class:`thinktwice.eval.distributed.RayConfig`) the problems are sharded over a
    Ray cluster; the backend is then built on the workers only.
    """
    import time

    from thinktwice.eval.runner import evaluate
    from thinktwice.eval.store import DONE, FAILED, WITH_FAILURES, RunStore
    from thinktwice.registry import tasks
    from thinktwice.strategies import create_strategy

    task = tasks.create(spec["task"], **spec.get("task_options", {}))
    strategy = create_strategy(spec["strategy"], **spec.get("strategy_options", {}))
    problems = list(task.load(spec.get("split", "test"), limit=spec.get("limit")))
    if not problems:
        raise ConfigError(f"task {spec['task']!r} has no problems in split {spec.get('split', 'test')!r}")
    if ray is None:
        backend = backend_from_options(
            spec["backend"], base_url=spec.get("base_url"), api_key=api_key, model=spec.get("model"),
            concurrency=spec.get("concurrency"), **spec.get("backend_options", {}),
        )
    else:
        import os

        from thinktwice.eval.distributed import connect

        if spec["backend"].partition(":")[0] == "openai" and not spec.get("base_url"):
            spec = {**spec, "base_url": os.environ.get("OPENAI_BASE_URL")}  # workers may not share the env
        backend = None
        owns_ray = connect(ray.address)
    with RunStore(store_path) as store:
        if resume is None:
            run_id = store.create_run(
                kind="eval", config=spec, task=spec["task"], task_version=getattr(task, "version", None),
                backend=spec["backend"], model=getattr(backend, "model", spec.get("model")), strategy=spec["strategy"],
                seed=spec.get("seed", 0),
            )
            store.put_problems(run_id, problems)
        else:
            run_id = resume
            store.claim_run(run_id)
        err.print(f"run {run_id} -> {store_path}")
        bar = progress_bar("eval", "acc {task.fields[acc]}", "{task.fields[failed]}", "{task.fields[tps]} tok/s")
        t0 = time.perf_counter()
        with bar:
            tid = bar.add_task("eval", total=len(problems), acc="-", failed="", tps="-")

            def on_progress(p: Any) -> None:
                acc = f"{p.correct / max(1, p.done - p.failed):.3f}"
                tps = f"{p.usage.completion_tokens / max(1e-9, time.perf_counter() - t0):.0f}"
                bar.update(tid, completed=p.done, acc=acc, tps=tps, failed=f"[red]{p.failed} failed" if p.failed else "")

            async def go() -> Any:
                if backend is None:
                    from thinktwice.eval.distributed import evaluate_ray

                    return await evaluate_ray(
                        spec, problems, store=store, run_id=run_id, ray_config=ray, api_key=api_key,
                        budget=_budget(spec.get("budget_tokens"), spec.get("budget_calls")), on_progress=on_progress,
                    )
                try:
                    return await evaluate(
                        task, strategy, backend, problems, store=store, run_id=run_id,
                        budget=_budget(spec.get("budget_tokens"), spec.get("budget_calls")),
                        concurrency=spec.get("concurrency", 16), seed=spec.get("seed", 0), on_progress=on_progress,
                    )
                finally:
                    await backend.aclose()

            try:
                result = run_async(go())
            except BaseException:
                store.set_status(run_id, FAILED)
                raise
            finally:
                if ray is not None and owns_ray:
                    import ray as ray_mod

                    ray_mod.shutdown()
        store.set_status(run_id, DONE if result.failed == 0 else WITH_FAILURES)
        _print_result(result, spec, run_id, show_rows, json_out)
    return run_id, result.failed


def _print_result(result: Any, spec: dict[str, Any], run_id: int, show_rows: int, json_out: bool) -> None:
    import json

    lo, hi = result.ci
    u = result.usage
    n = max(1, len(result.rows))
    if json_out:
        out.print_json(json.dumps({
            "run": run_id, "accuracy": result.accuracy, "ci95": [lo, hi], "n": result.n, "failed": result.failed,
            "usage": u.to_dict(),
            "rows": [{"problem": r.problem_id, "answer": r.answer, "gold": r.gold, "correct": r.correct,
                      "usage": r.usage.to_dict(), "stopped_because": r.stopped_because, "error": r.error}
                     for r in result.rows],
        }))
        return
    rows = Table(title=f"run {run_id}: {spec['strategy']} on {spec['task']}", show_lines=False)
    for col in ("problem", "answer", "gold", "ok", "calls", "prompt tok", "gen tok", "stop"):
        rows.add_column(col, justify="right" if col in ("calls", "prompt tok", "gen tok") else "left")
    for r in result.rows[:show_rows]:
        ok = "error" if r.error else ("[green]yes" if r.correct else "[red]no")
        rows.add_row(escape(r.problem_id), escape(str(r.answer)), escape(str(r.gold)), ok, str(r.usage.calls), str(r.usage.prompt_tokens),
                     str(r.usage.completion_tokens), r.stopped_because)
    if len(result.rows) > show_rows:
        rows.caption = f"... {len(result.rows) - show_rows} more problems (thinktwice show {run_id})"
    out.print(rows)
    summary = Table(show_header=True, caption="calls and tokens per problem")
    for col in ("accuracy", "95% CI", "n", "failed", "calls", "prompt tok", "gen tok"):
        summary.add_column(col, justify="right", no_wrap=True)
    summary.add_row(f"{result.accuracy:.3f}", f"[{lo:.3f}, {hi:.3f}]", str(result.n), str(result.failed),
                    f"{u.calls / n:.1f}", f"{u.prompt_tokens / n:.0f}", f"{u.completion_tokens / n:.0f}")
    out.print(summary)
    if result.failed:
        err.print(f"[yellow]{result.failed} problem(s) failed (run {run_id} is completed-with-failures; "
                  f"`thinktwice show {run_id}` lists the errors, `thinktwice eval --resume {run_id}` retries them)")


def register(app: typer.Typer) -> None:
    @app.command("eval", cls=RayOptionCommand)
    def eval_cmd(
        task: str = typer.Option("gsm8k", "--task", "-t", help="Task name (gsm8k, math, jsonl, arith, ...)."),
        limit: int | None = limit_option(help="Evaluate the first N problems."),
        split: str = SplitOpt,
        strategy: str | None = typer.Option(
            None, "--strategy", help="Strategy spec, e.g. self-consistency (default: greedy, or self-consistency with -n)."
        ),
        n: int | None = typer.Option(None, "-n", help="Samples per problem (strategies that sample)."),
        options: list[str] | None = StrategyOptionsOpt,
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
        budget_calls: int | None = typer.Option(None, "--budget-calls", help="Call budget per problem.",
                                                  callback=positive("--budget-calls")),
        resume: int | None = typer.Option(None, "--resume", help="Finish run RUN (its stored config is used)."),
        show_rows: int = typer.Option(50, "--rows", help="Per-problem rows to print.", callback=positive("--rows", 0)),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
        ray_address: str | None = RayOpt,
        shards: int | None = ShardsOpt,
        ray_workers: int | None = RayWorkersOpt,
        ray_cpus: float = RayCpusOpt,
        ray_gpus: float = RayGpusOpt,
    ) -> None:
        """Evaluate a strategy on a task; prints accuracy with a 95% CI and the compute per problem."""
        import os

        store_path = default_store(store)
        if resume is not None:
            spec = stored_config(store_path, resume, "eval")
        else:
            strategy_options = parse_kv(options)
            if n is not None:
                strategy_options["n"] = n
            spec = {
                "task": task, "task_options": parse_kv(task_options), "split": split, "limit": limit,
                "strategy": strategy or ("self-consistency" if n is not None else "greedy"), "strategy_options": strategy_options, "backend": backend,
                "backend_options": parse_kv(backend_options), "base_url": base_url, "model": model,
                "concurrency": concurrency, "seed": seed, "budget_tokens": budget_tokens,
                "budget_calls": budget_calls,
            }
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        _, failed = run_eval(spec, store_path=store_path, resume=resume, api_key=key, show_rows=show_rows,
                             json_out=json_out, ray=ray_config(ray_address, shards, ray_workers, ray_cpus, ray_gpus))
        if failed:
            raise typer.Exit(1)
