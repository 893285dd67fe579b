"""``thinktwice critic``: measure a model as a critic (ProcessBench, open loop, closed loop)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from thinktwice.cli.common import (
    ApiKeyOpt, BackendOpt, BackendOptionsOpt, BaseUrlOpt, ConcurrencyOpt, ModelOpt, SeedOpt, StoreOpt,
    backend_from_options, default_store, err, limit_option, out, parse_kv, run_async,
)
from thinktwice.errors import ConfigError

__all__ = ["register"]

critic_app = typer.Typer(help="Measure a model's ability to find and fix errors.", no_args_is_help=True)


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _ci(c: tuple[float, float]) -> str:
    return f"[{_fmt(c[0])}, {_fmt(c[1])}]"


def _backend(backend: str, base_url: str | None, api_key: str | None, model: str | None,
             concurrency: int, options: list[str] | None) -> Any:
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    return backend_from_options(backend, base_url=base_url, api_key=key, model=model, concurrency=concurrency,
                                **parse_kv(options))


@critic_app.command("processbench")
def processbench_cmd(
    subset: str = typer.Option("gsm8k", "--subset", help="gsm8k or math."),
    limit: int | None = limit_option(None, help="First N items."),
    prompt: str = typer.Option("official", "--prompt",
                               help="official (the released ProcessBench template and parser, comparable with the "
                                    "published F1) or thinktwice (numbered steps, lenient verdict parser)."),
    n: int = typer.Option(1, "-n", help="Samples per item (majority vote when > 1)."),
    max_tokens: int = typer.Option(768, "--max-tokens",
                                   help="Critic tokens per reply (the released runs allow 8192; cut replies are "
                                        "counted as truncated)."),
    backend: str = BackendOpt,
    backend_options: list[str] | None = BackendOptionsOpt,
    base_url: str | None = BaseUrlOpt,
    api_key: str | None = ApiKeyOpt,
    model: str | None = ModelOpt,
    concurrency: int = ConcurrencyOpt,
    store: Path | None = StoreOpt,
    seed: int = SeedOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """ProcessBench: name the earliest wrong step; F1 of accuracy on erroneous and correct items."""
    from thinktwice.eval.processbench import (
        load_processbench, pb_metrics, prompt_version, run_processbench, trivial_predictions,
    )
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.meter import Meter
    from thinktwice.types import Problem, Sample

    version = prompt_version(prompt)
    items = load_processbench(subset, limit=limit)
    lm = _backend(backend, base_url, api_key, model, concurrency, backend_options)
    config = {"subset": subset, "limit": limit, "n": n, "max_tokens": max_tokens, "backend": backend,
              "model": model, "seed": seed, "prompt": prompt, "prompt_version": version}
    with RunStore(default_store(store)) as st:
        rid = st.create_run(kind="critic", config=config, task=f"processbench-{subset}",
                            task_version=version, backend=backend, model=getattr(lm, "model", None),
                            strategy="processbench", seed=seed)
        st.put_problems(rid, [Problem(it.id, it.problem, str(it.label), {"steps": list(it.steps)}) for it in items])
        err.print(f"run {rid}: {len(items)} ProcessBench-{subset} items")

        def on_item(i: int, item: Any, raw: list[str], pred: int | None) -> None:
            st.put_samples(rid, item.id, [Sample(t) for t in raw], answers=[None if pred is None else str(pred)] * len(raw),
                           correct=[pred == item.label] * len(raw))

        async def go() -> Any:
            try:
                return await run_processbench(items, Meter(lm), prompt=prompt, n=n, max_tokens=max_tokens,
                                              concurrency=concurrency, seed=seed, on_item=on_item)
            finally:
                await lm.aclose()

        res = run_async(go())
        st.set_status(rid, "done")
    labels = [it.label for it in items]
    rows = [("critic", res.metrics, res.ci, res.confusion)]
    for kind in ("no-error", "step-0"):
        m, c, conf = pb_metrics(labels, trivial_predictions(items, kind))
        rows.append((f"always {kind}", m, c, conf))
    if as_json:
        out.print_json(json.dumps({"run": rid, "prompt": prompt, "truncated": res.truncated,
                                   "usage": res.usage.to_dict(), "rows": [
            {"name": name, "metrics": m, "ci95": c, "confusion": conf} for name, m, c, conf in rows]}))
        return
    table = Table(title=f"ProcessBench {subset} (n={len(items)}; {int(res.metrics['n_err'])} erroneous; "
                        f"{prompt} prompt)")
    for col in ("predictor", "acc erroneous [CI]", "acc correct [CI]", "F1 [CI]", "confusion"):
        table.add_column(col)
    for name, m, c, conf in rows:
        table.add_row(name, f"{_fmt(m['acc_err'])} {_ci(c['acc_err'])}", f"{_fmt(m['acc_cor'])} {_ci(c['acc_cor'])}",
                      f"{_fmt(m['f1'])} {_ci(c['f1'])}", ", ".join(f"{k} {v}" for k, v in sorted(conf.items())))
    out.print(table)
    u = res.usage
    out.print(f"compute: {u.calls} calls, {u.prompt_tokens} prompt tokens, {u.completion_tokens} generated tokens; "
              f"{res.truncated} replies cut at --max-tokens {max_tokens}")


@critic_app.command("open")
def open_cmd(
    run: int = typer.Option(..., "--run", help="A stored run whose samples carry correctness labels."),
    per_problem: int = typer.Option(2, "--per-problem", help="Samples judged per problem (right/wrong balanced)."),
    limit: int | None = limit_option(None, help="Judge at most N samples."),
    backend: str = BackendOpt,
    backend_options: list[str] | None = BackendOptionsOpt,
    base_url: str | None = BaseUrlOpt,
    api_key: str | None = ApiKeyOpt,
    model: str | None = ModelOpt,
    concurrency: int = ConcurrencyOpt,
    store: Path | None = StoreOpt,
    seed: int = SeedOpt,
) -> None:
    """Open-loop critique: the model judges stored samples; F1 on detecting wrong ones, self vs cross."""
    from thinktwice.eval.critique import judge_samples, pick_balanced
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.meter import Meter

    with RunStore(default_store(store), readonly=True) as st:
        questions = {p.id: p.question for p in st.problems(run)}
        samples = pick_balanced(st.samples(run, with_tokens=False), per_problem, seed)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise ConfigError(f"run {run} has no samples with correctness labels to judge")
    lm = _backend(backend, base_url, api_key, model, concurrency, backend_options)

    async def go() -> Any:
        try:
            return await judge_samples(questions, samples, Meter(lm), critic_model=getattr(lm, "model", ""),
                                       concurrency=concurrency)
        finally:
            await lm.aclose()

    res = run_async(go())
    table = Table(title=f"open-loop critique of run {run} by {getattr(lm, 'model', backend)}")
    for col in ("split", "n", "wrong", "precision", "recall", "F1 (wrong)", "verdict acc", "unparsed"):
        table.add_column(col)
    for which in ("self", "cross", "all"):
        m = res.split(which)
        table.add_row(which, str(int(m["n"])), str(int(m["wrong"])), _fmt(m["precision"]), _fmt(m["recall"]),
                      _fmt(m["f1"]), _fmt(m["accuracy"]), str(int(m["unparsed"])))
    out.print(table)
    u = res.usage
    out.print(f"compute: {u.calls} calls, {u.prompt_tokens} prompt tokens, {u.completion_tokens} generated tokens")


@critic_app.command("closed")
def closed_cmd(
    task: str = typer.Option("gsm8k", "--task", "-t", help="Task."),
    limit: int | None = limit_option(50, help="First N problems."),
    rounds: int = typer.Option(1, "--rounds", "-k", help="Critique-and-correct rounds (iterative critique)."),
    backend: str = BackendOpt,
    backend_options: list[str] | None = BackendOptionsOpt,
    base_url: str | None = BaseUrlOpt,
    api_key: str | None = ApiKeyOpt,
    model: str | None = ModelOpt,
    concurrency: int = ConcurrencyOpt,
    store: Path | None = StoreOpt,
    seed: int = SeedOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Closed-loop critique: accuracy after critique-and-correct vs before, flips, and matched SC."""
    from thinktwice.eval.critique import flip_report, matched_k
    from thinktwice.eval.runner import evaluate
    from thinktwice.eval.stats import bootstrap_ci
    from thinktwice.eval.store import RunStore
    from thinktwice.registry import tasks
    from thinktwice.strategies.critique_correct import PROMPT_VERSION, CritiqueCorrect
    from thinktwice.strategies.self_consistency import SelfConsistency

    t = tasks.create(task)
    problems = list(t.load("test", limit=limit))
    lm = _backend(backend, base_url, api_key, model, concurrency, backend_options)
    cc = CritiqueCorrect(rounds=rounds)
    with RunStore(default_store(store)) as st:
        def new_run(strategy: str, config: dict[str, Any]) -> int:
            rid = st.create_run(kind="eval", config={"task": task, "limit": limit, "backend": backend, "model": model,
                                                     "seed": seed, **config},
                                task=task, task_version=getattr(t, "version", None), backend=backend,
                                model=getattr(lm, "model", None), strategy=strategy, seed=seed)
            st.put_problems(rid, problems)
            return rid

        async def go() -> Any:
            try:
                rid = new_run("critique-correct", {"strategy": "critique-correct", "rounds": rounds,
                                                   "prompt_version": PROMPT_VERSION})
                res = await evaluate(t, cc, lm, problems, store=st, run_id=rid, concurrency=concurrency, seed=seed)
                st.set_status(rid, "done")
                decisions = st.decisions(rid)
                first = [st.samples(rid, d.problem_id, with_tokens=False)[0].sample.usage.completion_tokens
                         for d in decisions]
                per_sample = sum(first) / max(1, len(first))
                k = matched_k(res.usage.completion_tokens / max(1, res.n), per_sample)
                rid_sc = new_run("self-consistency", {"strategy": "self-consistency", "n": k, "matched_to": rid})
                sc = await evaluate(t, SelfConsistency(n=k), lm, problems, store=st, run_id=rid_sc,
                                    concurrency=concurrency, seed=seed)
                st.set_status(rid_sc, "done")
                return rid, res, decisions, rid_sc, sc, k
            finally:
                await lm.aclose()

        rid, res, decisions, rid_sc, sc, k = run_async(go())
    rep = flip_report(decisions)
    by_sc = {r.problem_id: r for r in sc.rows}
    diff = [float(bool(r.correct)) - float(bool(by_sc[r.problem_id].correct)) for r in res.rows
            if r.error is None and r.problem_id in by_sc and by_sc[r.problem_id].error is None]
    lo, hi = bootstrap_ci(diff, seed=seed)
    mean_diff = sum(diff) / max(1, len(diff))
    cc_tokens = res.usage.completion_tokens / max(1, res.n)
    sc_tokens = sc.usage.completion_tokens / max(1, sc.n)
    if as_json:
        out.print_json(json.dumps({
            "runs": [rid, rid_sc], "n": rep.n, "accuracy_by_round": rep.accuracy, "i_to_c": rep.i_to_c,
            "c_to_i": rep.c_to_i, "unchanged": rep.unchanged, "gen_tokens_per_problem": cc_tokens,
            "matched_sc": {"k": k, "accuracy": sc.accuracy, "gen_tokens_per_problem": sc_tokens},
            "diff_vs_matched_sc": mean_diff, "diff_ci95": [lo, hi], "paired": len(diff),
        }))
        return
    table = Table(title=f"closed-loop critique on {task} (n={rep.n}, runs {rid} and {rid_sc})")
    for col in ("stage", "accuracy", "i->c", "c->i", "unchanged", "gen tok/problem"):
        table.add_column(col)
    for r, acc in enumerate(rep.accuracy):
        if r == 0:
            table.add_row("initial (greedy)", _fmt(acc), "", "", "", "")
        else:
            last = r == len(rep.accuracy) - 1
            table.add_row(f"after critique round {r}", _fmt(acc), _fmt(rep.i_to_c[r - 1]), _fmt(rep.c_to_i[r - 1]),
                          _fmt(rep.unchanged[r - 1]), f"{cc_tokens:.0f}" if last else "")
    table.add_row(f"self-consistency@{k} (matched tokens)", _fmt(sc.accuracy), "", "", "", f"{sc_tokens:.0f}")
    out.print(table)
    out.print(f"critique-correct minus matched SC: {mean_diff:+.3f}  95% CI [{lo:+.3f}, {hi:+.3f}]"
              f"  (paired over {len(diff)} problems)")


def register(app: typer.Typer) -> None:
    app.add_typer(critic_app, name="critic")
