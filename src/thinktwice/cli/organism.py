"""``thinktwice organism train`` and ``thinktwice demo``: the model organism from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from thinktwice.cli.common import SeedOpt, err, out, progress_bar, run_async
from thinktwice.errors import ConfigError

__all__ = ["register"]

organism_app = typer.Typer(help="The model organism: a tiny from-scratch transformer on synthetic arithmetic.",
                           no_args_is_help=True)


def _train(preset: str, out_dir: Path | None, steps: int | None, seed: int, device: str,
           threads: int | None = None, eval_problems: int = 100) -> dict[str, Any]:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError("the organism needs torch: pip install 'thinktwice[organism]'") from None
    from thinktwice.organism.presets import preset as get_preset
    from thinktwice.organism.train import train

    cfg = get_preset(preset, seed=seed, **({"steps": steps} if steps else {}))
    bar = progress_bar(f"train {preset}", "loss {task.fields[loss]}")
    with bar:
        tid = bar.add_task("train", total=cfg.steps, loss="-")

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            bar.update(tid, completed=step, loss=f"{info['loss']:.3f}")

        _, summary = train(cfg, out_dir, device=device, progress=progress, threads=threads,
                           eval_problems=eval_problems)
    return summary


def train_cmd(
    preset: str = typer.Option("tiny", "--preset", "-p", help="tiny (CI, < 3 min on CPU), small, medium (GPU)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for model.pt."),
    steps: int | None = typer.Option(None, "--steps", help="Override the preset's optimizer steps."),
    seed: int = SeedOpt,
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (1 on a busy machine)."),
    eval_problems: int = typer.Option(100, "--eval", help="Held-out problems for the closing greedy check."),
) -> None:
    """Train an organism from scratch (same seed -> same checkpoint on the same machine)."""
    summary = _train(preset, out_dir, steps, seed, device, threads, eval_problems)
    out.print_json(json.dumps(summary))


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.1f}"


def demo_cmd(
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="Organism checkpoint (default: shipped)."),
    train_first: bool = typer.Option(False, "--train", help="Train the 'tiny' preset first and use it."),
    problems: int = typer.Option(300, "--problems", "-n", help="Held-out problems."),
    samples: int = typer.Option(16, "--samples", "-k", help="Samples per problem (SC@k, best-of-k)."),
    temperature: float = typer.Option(0.8, "--temperature", "-t"),
    steps: int | None = typer.Option(None, "--steps", help="Difficulty: events per problem (default: task's)."),
    plot: Path = typer.Option(Path("organism_demo.png"), "--plot", help="Where to write the PNG."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    device: str = typer.Option("cpu", "--device"),
    seed: int = SeedOpt,
) -> None:
    """The quickest showcase: greedy, SC@k, adaptive-consistency and best-of-k on the organism, each
    beside self-consistency at the same generated tokens; writes an accuracy-vs-tokens plot."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from thinktwice.organism.demo import plot_demo, run_demo
    from thinktwice.tasks.arith import ArithTask

    if problems < 1 or samples < 1:
        raise ConfigError("--problems and --samples must be >= 1")
    if train_first:
        trained = Path("organism-tiny")
        _train("tiny", trained, None, seed, device)
        checkpoint = str(trained)
    try:
        from thinktwice.lm.organism import OrganismBackend
    except ImportError:
        raise ConfigError("the organism needs torch: pip install 'thinktwice[organism]'") from None
    backend = OrganismBackend(checkpoint, device=device, seed=seed)
    task = ArithTask(**({"steps": steps} if steps else {}))
    probs = list(task.load("test", problems))
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=err)
    with bar:
        ids: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done)

        result = run_async(run_demo(backend, task, probs, n=samples, temperature=temperature, seed=seed,
                                    progress=progress))
    table = Table(title=f"{backend.model} on {len(probs)} held-out problems ({task.version}), T={temperature}")
    # accuracy and difference in points; "SC at same tokens" = self-consistency at exactly the row's generated
    # tokens (SC@k, or "SC@k/k+1 mix w": SC@k+1 with probability w), "SC tokens" what that baseline spends
    for col in ("strategy", "accuracy % [95% CI]", "calls", "gen. tokens", "SC at same tokens", "SC tokens",
                "difference [95% CI]"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in result.rows:
        table.add_row(
            r.name, f"{_fmt(r.accuracy)} [{_fmt(r.lo)}, {_fmt(r.hi)}]", f"{r.calls:.2f}", f"{r.tokens:.0f}",
            f"{r.matched_label}: {_fmt(r.matched_accuracy)}" if r.matched_label else "-",
            (f"{r.matched_tokens:.0f}" + (" *" if r.matched_capped else "")) if r.matched_tokens is not None else "-",
            f"{100 * r.delta:+.1f} [{100 * (r.delta_lo or 0):+.1f}, {100 * (r.delta_hi or 0):+.1f}]"
            if r.delta is not None else "-",
        )
    wide = Console(width=max(out.width, 140))  # the table needs ~135 columns; pipes get 80
    wide.print(table)
    wide.print(f"pass@{samples} (oracle): {_fmt(result.pass_at_n)}%   mean tokens per sample: "
               f"{result.tokens_per_sample:.1f}")
    if any(r.matched_capped for r in result.rows):
        wide.print(f"* capped at the pool size: SC@{samples} spends FEWER tokens than the strategy, so that "
                   "row's baseline is not compute-matched")
    for s in result.skipped:
        err.print(f"skipped {s}")
    png = plot_demo(result, plot)
    err.print(f"wrote {png}")
    if json_out is not None:
        json_out.write_text(json.dumps({"rows": [r.to_dict() for r in result.rows], "sc_curve": result.sc_curve,
                                        "pass_at_n": result.pass_at_n, "skipped": result.skipped,
                                        "model": backend.model, "task": task.version}, indent=1))


def register(app: typer.Typer) -> None:
    organism_app.command("train")(train_cmd)
    app.add_typer(organism_app, name="organism")
    app.command("demo")(demo_cmd)
