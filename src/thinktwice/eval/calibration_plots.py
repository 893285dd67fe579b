"""PNG plots of a signal's calibration: reliability diagram and risk-coverage curve (matplotlib Agg).

matplotlib is imported inside the functions so ``import thinktwice`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.eval.calibration import DEFAULT_BINS, ece, risk_coverage

__all__ = ["reliability_bins", "reliability_diagram", "risk_coverage_plot"]


def reliability_bins(probs: np.ndarray, labels: np.ndarray,
                     n_bins: int = DEFAULT_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean confidence, accuracy (NaN when empty) and count."""
    idx = np.clip(np.minimum((probs * n_bins).astype(int), n_bins - 1), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=probs, minlength=n_bins) / count
        acc = np.bincount(idx, weights=labels.astype(float), minlength=n_bins) / count
    return conf, acc, count


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(
    probs: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, path: str | os.PathLike[str],
    *, title: str = "", n_bins: int = DEFAULT_BINS,
) -> Path:
    """Accuracy per confidence bin against the diagonal, with bin counts below; returns the path."""
    plt = _figure()
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=bool)
    ok = ~np.isnan(p)
    p, y = p[ok], y[ok]
    conf, acc, count = reliability_bins(p, y, n_bins)
    edges = np.linspace(0, 1, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    try:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
        has = count > 0
        ax.bar(centers[has], acc[has], width=1 / n_bins, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot(conf[has], acc[has], "o", color="C3", ms=4, label="mean confidence")
        e = ece(p, y, n_bins) if p.size else float("nan")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}  ECE({n_bins})={e:.3f}  n={p.size}".strip())
        ax.legend(loc="upper left", fontsize=8)
        axc.bar(centers, count, width=1 / n_bins, color="grey", edgecolor="black")
        axc.set_xlabel("confidence (mapped to [0, 1])")
        axc.set_ylabel("count")
        axc.set_xlim(0, 1)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out


def risk_coverage_plot(
    curves: dict[str, tuple[Sequence[float] | np.ndarray, Sequence[bool] | np.ndarray]],
    path: str | os.PathLike[str], *, title: str = "",
) -> Path:
    """Selective risk against coverage for one or more signals (``name -> (scores, labels)``),
    with the random-order baseline (the overall error rate); returns the path."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    try:
        base = None
        for name, (s, y) in curves.items():
            s = np.asarray(s, dtype=float)
            y = np.asarray(y, dtype=bool)
            ok = ~np.isnan(s)
            cov, risk = risk_coverage(s[ok], y[ok])
            if cov.size:
                ax.plot(cov, risk, label=f"{name} (AURC {risk.mean():.3f})")
                base = 1.0 - float(y[ok].mean())
        if base is not None:
            ax.axhline(base, ls="--", color="grey", lw=1, label="no selection")
        ax.set_xlabel("coverage")
        ax.set_ylabel("risk (error among answered)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
