"""``thinktwice runs`` and ``thinktwice show``: list stored runs and show one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.table import Table

from rich.markup import escape

from thinktwice.cli.common import StoreOpt, default_store, out, positive

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("runs")
    def runs(store: Path | None = StoreOpt) -> None:
        """List the runs in the store."""
        from thinktwice.eval.store import RunStore

        with RunStore(default_store(store), readonly=True) as st:
            infos = st.list_runs()
            table = Table(title=str(default_store(store)))
            for col in ("id", "kind", "created", "status", "task", "strategy", "backend", "model", "problems",
                        "accuracy"):
                table.add_column(col)
            for r in infos:
                decisions = st.decisions(r.id) if r.kind == "eval" else []
                graded = [d for d in decisions if d.correct is not None]
                acc = f"{sum(bool(d.correct) for d in graded) / len(graded):.3f}" if graded else "-"
                n = len(st.problems(r.id))
                created = dt.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M")
                table.add_row(str(r.id), r.kind, created, r.status, str(r.task), str(r.strategy), str(r.backend),
                              str(r.model), str(n), acc)
        out.print(table)

    @app.command("show")
    def show(
        run: int = typer.Argument(..., help="Run id."),
        store: Path | None = StoreOpt,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        rows: int = typer.Option(50, "--rows", help="Per-problem rows to print.", callback=positive("--rows", 0)),
        tracebacks: bool = typer.Option(False, "--tracebacks", help="Print the traceback of each failed problem."),
    ) -> None:
        """Show one run: its config, accuracy, compute and per-problem decisions."""
        from thinktwice.eval.stats import wilson_ci
        from thinktwice.eval.store import RunStore
        from thinktwice.types import Usage

        with RunStore(default_store(store), readonly=True) as st:
            info = st.get_run(run)
            decisions = st.decisions(run)
            problems = {p.id: p for p in st.problems(run)}
            events = st.event_records(run)
            counts = st.sample_counts(run)
            logged = st.calls(run)
        graded = [d for d in decisions if d.correct is not None]
        k = sum(bool(d.correct) for d in graded)
        lo, hi = wilson_ci(k, len(graded))
        total = Usage.total([d.usage for d in decisions])
        if as_json:
            out.print_json(json.dumps({
                "run": info.id, "kind": info.kind, "status": info.status, "config": info.config,
                "task": info.task, "task_version": info.task_version, "version": info.version,
                "git_sha": info.git_sha, "problems": len(problems), "decided": len(decisions),
                "samples": sum(counts.values()),
                "accuracy": k / len(graded) if graded else None, "ci95": [lo, hi], "usage": total.to_dict(),
                "events": [{"problem": e.problem_id, "kind": e.kind, "message": e.message, "detail": e.detail}
                           for e in events],
                "logged_calls": {pid: sum(len(v) for v in keys.values()) for pid, keys in logged.items()},
                "decisions": [{"problem": d.problem_id, "answer": d.answer, "gold": problems[d.problem_id].gold
                               if d.problem_id in problems else None, "correct": d.correct,
                               "confidence": d.confidence, "usage": d.usage.to_dict(),
                               "stopped_because": d.stopped_because} for d in decisions],
            }, default=str))
            return
        out.print(escape(f"run {info.id} ({info.kind}, {info.status}) task={info.task} "
                         f"[{info.task_version}] strategy={info.strategy} backend={info.backend} model={info.model}"))
        out.print(escape(f"thinktwice {info.version} git {info.git_sha or 'n/a'}; config: "
                         + json.dumps(info.config, default=str)))
        out.print(f"problems: {len(problems)}, decided: {len(decisions)}, samples stored: {sum(counts.values())}")
        if graded:
            out.print(f"accuracy: {k / len(graded):.3f}  95% CI [{lo:.3f}, {hi:.3f}]  (n={len(graded)})")
        n = max(1, len(decisions))
        out.print(f"compute: {total.calls} calls ({total.calls / n:.1f}/problem), {total.prompt_tokens} prompt "
                  f"tokens, {total.completion_tokens} generated tokens ({total.completion_tokens / n:.0f}/problem)")
        table = Table()
        for col in ("problem", "answer", "gold", "ok", "conf", "calls", "gen tok", "stop"):
            table.add_column(col)
        for d in decisions[:rows]:
            gold = problems[d.problem_id].gold if d.problem_id in problems else None
            conf = "-" if d.confidence is None else f"{d.confidence:.2f}"
            table.add_row(escape(d.problem_id), escape(str(d.answer)), escape(str(gold)), "[green]yes" if d.correct else "[red]no", conf,
                          str(d.usage.calls), str(d.usage.completion_tokens), str(d.stopped_because))
        if decisions:
            out.print(table)
        if logged:
            n_calls = sum(len(v) for keys in logged.values() for v in keys.values())
            out.print(f"logged calls of undecided problems: {n_calls} over {len(logged)} problem(s) "
                      "(reused by --resume)")
        for e in events[:20]:
            out.print(f"[yellow]{escape(e.kind)}[/yellow] {escape(e.problem_id or '')}: {escape(e.message)}")
            if tracebacks and e.detail:
                out.print(escape(e.detail.rstrip()), highlight=False)
        if len(events) > 20:
            out.print(f"... {len(events) - 20} more events (--json lists them all)")
        if not tracebacks and any(e.detail for e in events):
            out.print(f"tracebacks: thinktwice show {info.id} --tracebacks")
