"""``thinktwice sample``, ``curve`` and ``report``: draw a sample pool, replay strategies over it, report.

    thinktwice sample --task gsm8k -n 64 --limit 200 --store runs.db
    thinktwice curve --store runs.db --run 3 --strategies greedy,sc,weighted-sc:self-certainty,esc
    thinktwice report 3 4 --store runs.db --out report/
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

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
    progress_bar,
    run_async,
    stored_config,
)
from thinktwice.errors import ConfigError

__all__ = ["register", "run_sample"]


def run_sample(spec: dict[str, Any], *, store_path: Path, resume: int | None,
               api_key: str | None) -> tuple[int, int]:
    """Create (or resume) a pool run from ``spec`` and draw every missing sample; returns the run id and the
    number of problems left incomplete (the run is then ``completed-with-failures``)."""
    from thinktwice.eval.pool import PoolConfig, create_pool_run, draw_pool
    from thinktwice.eval.store import DONE, FAILED, WITH_FAILURES, RunStore
    from thinktwice.registry import tasks

    config = PoolConfig(**spec["pool"])
    task = tasks.create(spec["task"], **spec.get("task_options", {}))
    problems = list(task.load(spec.get("split", "test"), limit=spec.get("limit")))
    if not problems:
        raise ConfigError(f"task {spec['task']!r} has no problems in split {spec.get('split', 'test')!r}")
    backend = backend_from_options(
        spec["backend"], base_url=spec.get("base_url"), api_key=api_key, model=spec.get("model"),
        concurrency=config.concurrency, **spec.get("backend_options", {}),
    )
    with RunStore(store_path) as store:
        if resume is None:
            run_id = create_pool_run(store, task, backend, problems, config, spec=spec)
        else:
            run_id = resume
            store.claim_run(run_id)
        err.print(f"pool run {run_id} -> {store_path}")
        bar = progress_bar("sample", "{task.fields[problems]}", "{task.fields[tps]} tok/s", eta_label=True)
        with bar:
            tid = bar.add_task("sample", total=config.n * len(problems), problems="", tps="-")

            def on_progress(p: Any) -> None:
                bar.update(tid, completed=p.samples, problems=f"{p.problems_done}/{p.problems} problems",
                           tps=f"{p.tokens_per_second:.0f}")

            async def go() -> Any:
                try:
                    return await draw_pool(task, backend, problems, store, run_id, config, on_progress=on_progress)
                finally:
                    await backend.aclose()

            try:
                result = run_async(go())
            except BaseException:
                store.set_status(run_id, FAILED)
                raise
        counts = store.sample_counts(run_id)
        complete = sum(counts.get(p.id, 0) >= config.n for p in problems)
        store.set_status(run_id, DONE if complete == len(problems) else WITH_FAILURES)
    rate = result.completion_tokens / result.seconds if result.seconds > 0 else 0.0
    out.print(f"run {run_id}: {complete}/{len(problems)} problems complete, {result.samples} samples drawn now "
              f"({result.completion_tokens} tokens, {rate:.0f} tok/s)")
    if result.failed:
        err.print(f"[yellow]{len(result.failed)} problem(s) failed (run {run_id} is completed-with-failures; "
                  f"`thinktwice show {run_id}` lists the errors, `thinktwice sample --resume {run_id}` retries them)")
    return run_id, len(problems) - complete


def register(app: typer.Typer) -> None:
    from thinktwice.cli.scale import RayOpt, RayOptionCommand, ShardsOpt

    @app.command("sample", cls=RayOptionCommand)
    def sample_cmd(
        task: str = typer.Option("gsm8k", "--task", "-t", help="Task name."),
        n: int = typer.Option(64, "-n", help="Samples per problem."),
        limit: int | None = limit_option(help="The first L problems."),
        split: str = SplitOpt,
        task_options: list[str] | None = TaskOptionsOpt,
        temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (> 0)."),
        top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
        max_tokens: int | None = typer.Option(None, "--max-tokens", help="Generated-token cap (default: the task's)."),
        batch: int = typer.Option(16, "--batch", help="Samples per round of a problem."),
        top_logprobs: int = typer.Option(20, "--top-logprobs", help="Alternatives per token to store."),
        backend: str = BackendOpt,
        backend_options: list[str] | None = BackendOptionsOpt,
        base_url: str | None = BaseUrlOpt,
        api_key: str | None = ApiKeyOpt,
        model: str | None = ModelOpt,
        store: Path | None = StoreOpt,
        concurrency: int = ConcurrencyOpt,
        seed: int = SeedOpt,
        resume: int | None = typer.Option(None, "--resume", help="Finish pool run RUN (its stored config is used)."),
        ray_address: str | None = RayOpt,
        shards: int | None = ShardsOpt,
    ) -> None:
        """Draw a pool of N samples per problem (concurrent, resumable) with their token statistics."""
        import os

        store_path = default_store(store)
        if resume is not None:
            spec = {k: v for k, v in stored_config(store_path, resume, "pool").items()
                    if k not in ("prompt_version", "grader_version")}
        else:
            spec = {
                "task": task, "task_options": parse_kv(task_options), "split": split, "limit": limit,
                "backend": backend, "backend_options": parse_kv(backend_options), "base_url": base_url,
                "model": model,
                "pool": {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                         "batch": batch, "concurrency": concurrency, "top_logprobs": top_logprobs, "seed": seed},
            }
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if ray_address is not None:  # sharded over a Ray cluster (docs/scale.md)
            from thinktwice.cli.scale import ray_config, run_sample_ray

            incomplete = run_sample_ray(spec, store_path=store_path, resume=resume, api_key=key,
                                        ray=ray_config(ray_address, shards, None, 1.0, 0.0))
        else:
            _, incomplete = run_sample(spec, store_path=store_path, resume=resume, api_key=key)
        if incomplete:
            raise typer.Exit(1)

    @app.command("curve")
    def curve_cmd(
        run: int = typer.Option(..., "--run", "-r", help="The pool run to replay."),
        strategies: str = typer.Option("greedy,sc,adaptive-consistency,esc", "--strategies",
                                       help="Comma-separated: greedy, sc, weighted-sc:SIGNAL, best-of-n:SIGNAL, "
                                            "adaptive-consistency, esc, deepconf, deepconf-online."),
        permutations: int = typer.Option(200, "--permutations", "-B", help="Random orders per problem."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap draws for the 95% bands."),
        native_n: bool | None = typer.Option(
            None, "--native-n/--no-native-n",
            help="Bill n samples per call as one call (default: as the pool's backend could, from the run)."),
        window: int = typer.Option(2048, "--window", help="DeepConf group window (tokens)."),
        out_dir: Path | None = typer.Option(None, "--out", help="Write curves_tokens.png, curves_calls.png, curves.json."),
        store: Path | None = StoreOpt,
        seed: int = SeedOpt,
        json_out: bool = typer.Option(False, "--json", help="Print the curves as JSON."),
    ) -> None:
        """Replay strategies over a stored pool: accuracy vs generated tokens and calls, with 95% bands."""
        import json

        from rich.table import Table

        from thinktwice.eval.curves import parse_specs, pass_at_k_points, replay, summarize, table_ks
        from thinktwice.eval.plots import save_curve_png, strategy_label
        from thinktwice.eval.pool_data import PoolData
        from thinktwice.eval.report import pool_native_n, pool_temperature
        from thinktwice.eval.store import RunStore

        specs = parse_specs(strategies)
        with RunStore(default_store(store), readonly=True) as st:
            info = st.get_run(run)
            if info.kind != "pool":
                raise ConfigError(f"run {run} is a {info.kind!r} run; `thinktwice curve` replays pool runs "
                                  "(draw one with `thinktwice sample`)")
            pool = PoolData.from_store(st, run, window=window)
            if native_n is None:
                native_n, how = pool_native_n(info, st.samples(run, with_tokens=False))
                err.print(f"calls billed {'one per round of n samples' if native_n else 'one per sample'} "
                          f"({how}; --native-n/--no-native-n overrides)")
        t0 = time.perf_counter()
        curves = replay(pool, specs, n_perm=permutations, seed=seed, native_n=native_n, n_boot=n_boot)
        curves.append(pass_at_k_points(pool, n_boot=n_boot, seed=seed))
        approx = getattr(pool, "approx_scores", frozenset())
        labels = {c.label: strategy_label(c.label, temperature=pool_temperature(info), approx=approx) for c in curves}
        err.print(f"replayed {len(specs)} strategies over {pool.shape[0]} problems x {pool.shape[1]} samples x "
                  f"{permutations} orders in {time.perf_counter() - t0:.2f} s")
        for c in curves:
            for note in c.notes:
                err.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
        payload = {"run": run, "native_n": native_n,
                   "curves": [{**c.to_dict(), "display": labels.get(c.label, c.label)} for c in curves]}
        if json_out:
            out.print_json(json.dumps(payload))
        else:
            table = Table(title=f"run {run}: accuracy by budget k (95% two-level bootstrap)")
            for col in ("strategy", "k", "accuracy", "95% CI", "gen tokens", "calls", "prompt tokens"):
                table.add_column(col, justify="left" if col == "strategy" else "right")
            for r in summarize(curves, table_ks(pool.shape[1])):
                table.add_row(labels.get(str(r["strategy"]), str(r["strategy"])), str(r["k"]), f"{r['accuracy']:.3f}",
                              f"[{r['lo']:.3f}, {r['hi']:.3f}]", f"{r['tokens']:.0f}", f"{r['calls']:.1f}",
                              f"{r['prompt_tokens']:.0f}")
            out.print(table)
        if out_dir is not None:
            title = f"run {run}: {info.model or info.backend} on {info.task}"
            save_curve_png(curves, out_dir / "curves_tokens.png", x="tokens", title=title, labels=labels)
            save_curve_png(curves, out_dir / "curves_calls.png", x="calls", title=title, labels=labels)
            (out_dir / "curves.json").write_text(json.dumps(payload))
            err.print(f"wrote {out_dir}/curves_tokens.png, curves_calls.png, curves.json")

    @app.command("report")
    def report_cmd(
        runs: list[int] = typer.Argument(..., help="Run ids to report on (pool and eval runs)."),
        out_dir: Path = typer.Option(Path("report"), "--out", help="Directory for report.html, report.md, summary.json."),
        strategies: str | None = typer.Option(None, "--strategies", help="Strategies replayed on pool runs."),
        permutations: int = typer.Option(200, "--permutations", "-B", help="Random orders per problem."),
        drilldown: int = typer.Option(50, "--problems", help="Problems shown in the drill-down per run."),
        window: int = typer.Option(2048, "--window", help="DeepConf group window (tokens); a window as long as "
                                                          "the traces never cuts one (the report says so)."),
        store: Path | None = StoreOpt,
        seed: int = SeedOpt,
    ) -> None:
        """Write a self-contained HTML report (and Markdown, JSON) comparing runs."""
        from thinktwice.eval.report import DEFAULT_STRATEGIES, ReportOptions, write_report
        from thinktwice.eval.store import RunStore

        strats = tuple(s.strip() for s in strategies.split(",") if s.strip()) if strategies else DEFAULT_STRATEGIES
        opts = ReportOptions(strategies=strats, permutations=permutations, seed=seed, drilldown=drilldown,
                             window=window)
        with RunStore(default_store(store), readonly=True) as st:
            paths = write_report(st, runs, out_dir, opts)
        out.print(f"wrote {paths['html']}, {paths['md']}, {paths['json']}")
