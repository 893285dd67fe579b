"""``thinktwice probe fit``: fit a linear probe on hidden states to predict right/wrong answers of a run.

The probe reads the residual stream at the last completion token at one layer (default 2/3 of the
depth) through the ``hf`` backend's teacher-forced pass (one prefill of prompt + completion per stored
sample), fits a seeded L2 logistic regression with a held-out split by problem, prints train / held-out
AUROC and saves one ``.npz``. Score with it: ``thinktwice calibrate --run R --backend hf:M --signals probe:PATH``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from thinktwice.cli.common import (
    BackendOptionsOpt,
    SeedOpt,
    StoreOpt,
    default_store,
    err,
    out,
    parse_kv,
    run_async,
)
from thinktwice.errors import CapabilityError, ConfigError

__all__ = ["register", "run_probe_fit"]


def run_probe_fit(*, store_path: Path, run: int, backend_spec: str, backend_kw: dict[str, Any], layer: int | None,
                  out_path: Path, stage: str, seed: int, l2: float, holdout: float) -> Any:
    """The command's body; returns the saved :class:`~thinktwice.eval.probe.Probe`."""
    from thinktwice.cli.common import backend_from_options
    from thinktwice.eval.probe import ProbeConfig, collect_features, fit_probe
    from thinktwice.eval.signal_eval import load_pools
    from thinktwice.eval.store import RunStore

    cfg = ProbeConfig(l2=l2, holdout=holdout, seed=seed)
    with RunStore(store_path, readonly=True) as st:
        pools = load_pools(st, run, stage=stage if stage != "all" else None)
    items, labels, groups = [], [], []
    for pool in pools:
        for c, y in zip(pool.candidates, pool.labels):
            if c.sample.text:
                items.append((pool.query.prompt, c.sample.text))
                labels.append(y)
                groups.append(pool.problem_id)
    if not items:
        raise ConfigError(f"run {run} has no graded non-empty samples to fit a probe on")
    backend = backend_from_options(backend_spec, **backend_kw)
    if not backend.capabilities.has("hidden_states"):
        raise CapabilityError(f"backend {backend_spec!r} does not expose hidden states; use --backend hf:PATH")

    async def go() -> tuple[Any, int, int]:
        try:
            depth = backend.n_layers
            at = round(2 * depth / 3) if layer is None else layer
            if not 0 <= at <= depth:
                raise ConfigError(f"--layer must be in [0, {depth}] for this model, got {at}")
            err.print(f"reading layer {at}/{depth} hidden states of {len(items)} samples ...")
            x, cost = await collect_features(backend, items, at,
                                             on_progress=lambda d, t: err.print(f"  {d}/{t}", end="\r"))
            return x, cost, at
        finally:
            await backend.aclose()

    x, cost, at = run_async(go())
    probe = fit_probe(x, labels, groups, layer=at, model=backend.model, config=cfg)
    probe = type(probe)(probe.weights, probe.bias, probe.mean, probe.std, probe.layer, probe.model,
                        {**probe.meta, "run": run, "stage": stage, "prefill_tokens": cost})
    probe.save(out_path)
    t = Table(title=f"probe on run {run}: layer {at} of {backend.model}")
    for col in ("samples", "accuracy", "train AUROC", "held-out AUROC", "held-out n", "prefill tokens", "saved"):
        t.add_column(col, justify="right" if col != "saved" else "left")

    def f(v: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.3f}"

    t.add_row(str(len(labels)), f(sum(labels) / len(labels)), f(probe.meta["train_auroc"]),
              f(probe.meta["heldout_auroc"]), str(probe.meta["n_heldout"]), str(cost), str(out_path))
    out.print(t)
    return probe


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Linear probes on hidden states (latent-layer self-evaluation).", no_args_is_help=True)
    app.add_typer(group, name="probe")

    @group.command("fit")
    def fit(
        run: int = typer.Option(..., "--run", "-r", help="Stored run whose graded samples train the probe."),
        backend: str = typer.Option(..., "--backend", "-b", help="hf:PATH, the model that wrote the samples."),
        out_path: Path = typer.Option(..., "--out", "-o", help="Where to save the probe (.npz)."),
        layer: int | None = typer.Option(None, "--layer", help="Hidden-state layer (0 = embeddings; default 2/3 depth)."),
        store: Path | None = StoreOpt,
        stage: str = typer.Option("sample", "--stage", help="Which stored samples to use ('all' for every stage)."),
        l2: float = typer.Option(1.0, "--l2", help="L2 penalty on the standardised weights."),
        holdout: float = typer.Option(0.25, "--holdout", help="Share of problems held out for the AUROC."),
        seed: int = SeedOpt,
        backend_options: list[str] | None = BackendOptionsOpt,
    ) -> None:
        """Fit a probe that predicts right/wrong from a hidden state; prints train and held-out AUROC."""
        run_probe_fit(store_path=default_store(store), run=run, backend_spec=backend,
                      backend_kw=parse_kv(backend_options), layer=layer, out_path=out_path, stage=stage, seed=seed,
                      l2=l2, holdout=holdout)
