"""``thinktwice calibrate``: how well does each self-evaluation signal separate right answers from wrong?

Reads a stored run (``--run``) or draws a fresh pool live (``--task`` with ``--backend``), scores
every candidate with the chosen signals, prints AUROC, ECE, Brier and selective accuracy with
bootstrap 95% intervals, and writes a reliability diagram and a risk-coverage plot per signal.
ECE uses 10 equal-width bins unless ``--bins`` says otherwise (``eval.calibration.DEFAULT_BINS``).
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
    BackendOptionsOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    ModelOpt,
    SeedOpt,
    StoreOpt,
    backend_from_options,
    default_store,
    err,
    limit_option,
    out,
    parse_kv,
    run_async,
)
from thinktwice.errors import ConfigError

__all__ = ["register", "run_calibrate"]

_BINS_HELP = ("Equal-width ECE bins (default 10, as METHODS §3; 15 is the other common choice). "
              "The reliability plots use the same bins.")


def _fmt(v: float, ci: tuple[float, float] | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if ci is None or math.isnan(ci[0]):
        return f"{v:.3f}"
    return f"{v:.3f} [{ci[0]:.2f},{ci[1]:.2f}]"


def _tables(reports: list[Any], title: str) -> list[Table]:
    """Two tables (separation and calibration; selective prediction) so each fits ~120 columns."""
    ranked = sorted(reports, key=lambda r: -(r.auroc if not math.isnan(r.auroc) else -1))
    a = Table(title=title)
    for col in ("signal", "AUROC [95% CI]", "AUROC/problem", "ECE [95% CI]", "Brier [95% CI]", "n", "map"):
        a.add_column(col, justify="left" if col in ("signal", "map") else "right", no_wrap=col == "signal")
    b = Table(title="selective accuracy at coverage (most confident first)")
    for col in ("signal", "@50% [95% CI]", "@80% [95% CI]", "@100% [95% CI]", "AURC"):
        b.add_column(col, justify="left" if col == "signal" else "right", no_wrap=col == "signal")
    for r in ranked:
        n = f"{r.n}" + (f" (-{r.n_missing})" if r.n_missing else "")
        a.add_row(escape(r.label), _fmt(r.auroc, r.ci.get("auroc")), _fmt(r.auroc_within, None),
                  _fmt(r.ece, r.ci.get("ece")), _fmt(r.brier, r.ci.get("brier")), n, r.mapping)
        sel = [_fmt(r.selective.get(c, math.nan), r.ci.get(f"sel@{c:g}")) for c in (0.5, 0.8, 1.0)]
        b.add_row(escape(r.label), *sel, _fmt(r.aurc, None))
    return [a, b]


def _plots(pools: list[Any], scores: dict[str, Any], out_dir: Path, title: str, bins: int,
           approx: frozenset[str] = frozenset()) -> list[Path]:
    import numpy as np

    from thinktwice.eval.calibration import mapping_for, report_label, to_unit
    from thinktwice.eval.calibration_plots import reliability_diagram, risk_coverage_plot

    labels = np.array([y for p in pools for y in p.labels], dtype=bool)
    paths = []
    for name, s in scores.items():
        p = to_unit(s, mapping_for(name, s[~np.isnan(s)]))
        shown = report_label(name, name in approx)
        paths.append(reliability_diagram(p, labels, out_dir / f"{name}-reliability.png",
                                         title=f"{title} {shown}", n_bins=bins))
        paths.append(risk_coverage_plot({shown: (s, labels)}, out_dir / f"{name}-risk-coverage.png",
                                        title=f"{title} {shown}"))
    return paths


def run_calibrate(
    *, store_path: Path, run: int | None, signals: str, out_dir: Path | None, json_out: bool,
    backend_spec: str | None, backend_kw: dict[str, Any], task: str | None, n: int, limit: int | None,
    split: str, concurrency: int, seed: int, stage: str, n_boot: int, bins: int | None, rescore: bool,
    signal_options: dict[str, dict[str, Any]] | None = None, plots: bool = True,
    task_options: dict[str, Any] | None = None,
) -> int:
    """The command's body; returns the run id it calibrated (``bins`` None: the library default)."""
    import json

    from thinktwice.eval.calibration import DEFAULT_BINS

    from thinktwice.eval.signal_eval import draw_pool, load_pools, report_pools, resolve_signals, score_pools
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.meter import Meter

    if (run is None) == (task is None):
        raise ConfigError("give either --run RUN (a stored run) or --task TASK with --backend (draw a pool live)")
    if task is not None and backend_spec is None:
        raise ConfigError("live calibration (--task) needs --backend")
    backend = backend_from_options(backend_spec, **backend_kw) if backend_spec else None
    skipped: list[tuple[str, str]] = []

    def on_skip(name: str, reason: str) -> None:
        skipped.append((name, reason))
        err.print(f"[yellow]skipping {escape(name)}: {escape(reason)}")

    # in live mode the backend's capabilities are checked before anything is drawn
    live_caps = backend.capabilities if (task is not None and backend is not None) else None
    try:
        sigs = resolve_signals(signals, has_model=backend is not None, on_skip=on_skip, options=signal_options,
                               capabilities=live_caps, backend_name=backend_spec or "backend")
    except BaseException:
        if backend is not None:
            run_async(backend.aclose())
        raise

    async def go(st: RunStore) -> tuple[int, list[Any], dict[str, Any]]:
        try:
            rid = run
            if task is not None:
                from thinktwice.registry import tasks

                t = tasks.create(task, **(task_options or {}))
                problems = list(t.load(split, limit=limit))
                if not problems:
                    raise ConfigError(f"task {task!r} has no problems in split {split!r}")
                err.print(f"drawing {n} samples for {len(problems)} problems of {task} ...")
                rid = await draw_pool(t, backend, problems, st, n=n, seed=seed, concurrency=concurrency,
                                      config={"task": task, "task_options": task_options or {}, "split": split,
                                              "limit": limit, "backend": backend_spec},
                                      on_progress=lambda d, tot: err.print(f"  {d}/{tot}", end="\r"))
                err.print(f"stored pool as run {rid} -> {store_path}")
            if rid is None:  # unreachable: checked above
                raise ConfigError("no run to calibrate")
            pools = load_pools(st, rid, stage=stage if stage != "all" else None)
            lm = Meter(backend) if backend is not None else None
            scores = await score_pools(pools, sigs, lm, skip_missing=signals.strip() == "all", on_skip=on_skip,
                                       concurrency=concurrency, store=st, run_id=rid, rescore=rescore)
            if lm is not None and lm.usage.calls:
                u = lm.usage
                err.print(f"signal calls: {u.calls}, prompt tokens {u.prompt_tokens}, generated {u.completion_tokens}"
                          f" ({', '.join(f'{k}: {v.calls}' for k, v in lm.stages.items())})")
            return rid, pools, scores
        finally:
            if backend is not None:
                await backend.aclose()

    with RunStore(store_path) as st:
        rid, pools, scores = run_async(go(st))
    if not scores:
        raise ConfigError("no signal could be scored on this run" +
                          (f" (skipped: {', '.join(n for n, _ in skipped)})" if skipped else ""))
    bins = DEFAULT_BINS if bins is None else bins
    reports = report_pools(pools, scores, n_bins=bins, n_boot=n_boot, seed=seed)
    title = f"run {rid}"
    plot_dir = out_dir or Path(f"calibration-run{rid}")
    approx = frozenset(r.signal for r in reports if r.approx)
    paths = _plots(pools, scores, plot_dir, title, bins, approx) if plots else []
    if json_out:
        def clean(x: Any) -> Any:
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        out.print_json(json.dumps(clean({
            "run": rid, "problems": len(pools), "candidates": sum(len(p.labels) for p in pools),
            "signals": [r.to_dict() for r in reports], "skipped": [{"signal": s, "reason": r} for s, r in skipped],
            "plots": [str(p) for p in paths],
        })))
    else:
        from rich.console import Console

        acc = sum(sum(p.labels) for p in pools) / max(1, sum(len(p.labels) for p in pools))
        wide = out if out.is_terminal else Console(width=max(out.width, 120))  # pipes get the full table
        for t in _tables(reports, f"{title}: {len(pools)} problems, {sum(len(p.labels) for p in pools)} "
                                  f"candidates, accuracy {acc:.3f}"):
            wide.print(t)
        err.print(f"plots: {plot_dir}/ ({len(paths)} PNG); ECE uses {bins} equal-width bins; "
                  f"CIs: {n_boot} bootstrap resamples of problems")
        if approx:
            err.print(f"{', '.join(sorted(approx))}: computed from a renormalised top-k, not the full "
                      "vocabulary (approx.)")
    return rid


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate(
        run: int | None = typer.Option(None, "--run", "-r", help="Stored run whose samples to score."),
        signals: str = typer.Option("all", "--signals", help="Comma-separated signal names, or 'all'."),
        store: Path | None = StoreOpt,
        out_dir: Path | None = typer.Option(None, "--out", help="Folder for the PNG plots (default ./calibration-runN)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        task: str | None = typer.Option(None, "--task", "-t", help="Draw a fresh pool of this task (live mode)."),
        task_options: list[str] | None = typer.Option(None, "--task-option", "-T",
                                                      help="Task option key=value (live mode), e.g. max_tokens=256."),
        backend: str | None = typer.Option(None, "--backend", "-b",
                                           help="Backend for live mode and for signals that call the model."),
        backend_options: list[str] | None = BackendOptionsOpt,
        base_url: str | None = BaseUrlOpt,
        api_key: str | None = ApiKeyOpt,
        model: str | None = ModelOpt,
        n: int = typer.Option(8, "-n", help="Samples per problem (live mode)."),
        limit: int | None = limit_option(50, help="Problems to draw (live mode)."),
        split: str = typer.Option("test", "--split", help="Data split (live mode)."),
        stage: str = typer.Option("sample", "--stage", help="Which stored samples are candidates ('all' for every stage)."),
        concurrency: int = ConcurrencyOpt,
        seed: int = SeedOpt,
        n_boot: int = typer.Option(1000, "--boot", help="Bootstrap resamples for the 95% intervals."),
        bins: int | None = typer.Option(None, "--bins", help=_BINS_HELP),
        rescore: bool = typer.Option(False, "--rescore", help="Ignore stored scores of model-calling signals."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
        signal_option: list[str] | None = typer.Option(
            None, "--signal-option", "-S", help="Signal option NAME.KEY=VALUE (JSON values), e.g. p-true.show=answer."),
        list_signals: bool = typer.Option(False, "--list-signals", help="List the registered signals and exit."),
    ) -> None:
        """Measure how well each signal separates right from wrong answers (AUROC, ECE, Brier, selective accuracy)."""
        import os

        if list_signals:
            _print_signals()
            return

        kw: dict[str, Any] = {}
        if backend is not None:
            kw = {"base_url": base_url, "model": model, "concurrency": concurrency,
                  "api_key": api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
                  **parse_kv(backend_options)}
        if n < 1 or n_boot < 0 or (bins is not None and bins < 1):
            raise ConfigError("-n and --bins must be >= 1 and --boot >= 0")
        run_calibrate(store_path=default_store(store), run=run, signals=signals, out_dir=out_dir, json_out=json_out,
                      backend_spec=backend, backend_kw=kw, task=task, n=n, limit=limit, split=split,
                      concurrency=concurrency, seed=seed, stage=stage, n_boot=n_boot, bins=bins, rescore=rescore,
                      signal_options=_signal_options(signal_option), plots=plots,
                      task_options=parse_kv(task_options))


def _print_signals() -> None:
    """One row per registered signal: what it needs, whether it calls the model, its summary."""
    import inspect

    from thinktwice.registry import signals as registry

    t = Table(title="signals (thinktwice calibrate --signals NAME,...)")
    for col in ("signal", "needs", "calls model", "what"):
        t.add_column(col, no_wrap=col == "signal")
    for name in registry.names():
        target = registry.get(name)
        needs = ", ".join(sorted(getattr(target, "requires", ()) or ())) or "text"
        calls = getattr(target, "needs_model", None)
        doc = (inspect.getdoc(target) or registry.help(name) or "").split("\n")[0]
        t.add_row(escape(name), needs, "yes" if calls is True or calls is None else
                  ("no" if calls is False else "in 'ask' mode"), escape(doc))
    from rich.console import Console

    (out if out.is_terminal else Console(width=max(out.width, 150))).print(t)


def _signal_options(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """Parse ``NAME.KEY=VALUE`` pairs into per-signal option dicts (values read as JSON when they parse)."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for p in pairs or []:
        lhs, sep, value = p.partition("=")
        name, dot, key = lhs.rpartition(".")
        if not sep or not dot or not name or not key:
            raise ConfigError(f"signal option {p!r} is not of the form NAME.KEY=VALUE")
        try:
            v: Any = json.loads(value)
        except json.JSONDecodeError:
            v = value
        out.setdefault(name, {})[key.replace("-", "_")] = v
    return out
