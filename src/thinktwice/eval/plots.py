"""Accuracy-vs-compute plots of replayed curves (matplotlib, Agg backend, PNG).

matplotlib is imported inside the functions so ``import thinktwice`` stays light.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError

__all__ = ["curve_figure", "curve_png_bytes", "png_data_uri", "save_curve_png"]

_X = {"tokens": ("mean generated tokens per problem", "tokens"),
      "calls": ("mean model calls per problem", "calls"),
      "prompt_tokens": ("mean prompt tokens per problem", "prompt_tokens"),
      "samples": ("samples drawn (k)", "samples")}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def curve_figure(curves: Sequence[Any], *, x: str = "tokens", title: str = "", log_x: bool = True) -> Any:
    """A figure of accuracy (with its 95% band) against ``x`` for each curve.

    ``curves`` are :class:`~thinktwice.eval.curves.Curve`; ``pass@k`` is drawn dashed (the oracle
    ceiling) and single-point curves (greedy) as markers. The caller closes the figure.
    """
    if x not in _X:
        raise ConfigError(f"x must be one of {', '.join(_X)}, got {x!r}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    label_x, attr = _X[x]
    for i, c in enumerate(curves):
        xs = np.asarray(getattr(c, attr), dtype=float)
        color = f"C{i % 10}"
        if c.label == "pass@k":
            ax.plot(xs, c.accuracy, ls="--", color="grey", lw=1.2, label="pass@k (oracle)")
            continue
        if xs.size == 1:
            ax.errorbar(xs, c.accuracy, yerr=[c.accuracy - c.lo, c.hi - c.accuracy], fmt="o", color=color,
                        capsize=3, label=c.label)
            continue
        ax.plot(xs, c.accuracy, color=color, lw=1.6, label=c.label)
        ax.fill_between(xs, c.lo, c.hi, color=color, alpha=0.18, lw=0)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(label_x)
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"accuracy vs {attr.replace('_', ' ')} (95% two-level bootstrap bands)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def curve_png_bytes(curves: Sequence[Any], *, x: str = "tokens", title: str = "", dpi: int = 100) -> bytes:
    """The curve plot as PNG bytes."""
    plt = _plt()
    fig = curve_figure(curves, x=x, title=title)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_curve_png(curves: Sequence[Any], path: str | os.PathLike[str], *, x: str = "tokens",
                   title: str = "") -> Path:
    """Write the curve plot to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(curve_png_bytes(curves, x=x, title=title))
    return out


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, to inline a plot in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
