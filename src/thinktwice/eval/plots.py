"""Accuracy-vs-compute plots of replayed curves (matplotlib, Agg backend, PNG).

One panel per strategy, each beside self-consistency (SC@k) and the pass@k ceiling, on shared
axes (small multiples): overlaid bootstrap bands of many strategies cannot be told apart. The
legend sits below the panels, never over a curve.

matplotlib is imported inside the functions so ``import thinktwice`` stays light.
"""

from __future__ import annotations

import base64
import io
import math
import os
import textwrap
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError
from thinktwice.eval.calibration import APPROX_LABEL

__all__ = ["APPROX_TAG", "curve_figure", "curve_png_bytes", "png_data_uri", "save_curve_png", "signal_label",
           "strategy_label"]

APPROX_TAG = APPROX_LABEL
"""Appended to signals computed from a top-k renormalisation of the token distribution (one spelling
with the calibration reports')."""

_X = {"tokens": ("mean generated tokens per problem", "tokens"),
      "calls": ("mean model calls per problem", "calls"),
      "prompt_tokens": ("mean prompt tokens per problem", "prompt_tokens"),
      "samples": ("samples drawn (k)", "samples")}
_BASELINE = "sc"
_ORACLE = "pass@k"
_SC_COLOR, _STRAT_COLOR, _ORACLE_COLOR = "0.45", "C0", "0.25"


def signal_label(name: str, approx: Collection[str] = ()) -> str:
    """``name``, marked ``(approx., top-k)`` when it was computed from approximate token statistics."""
    return f"{name} {APPROX_TAG}" if name in approx else name


def strategy_label(label: str, *, temperature: float | None = None, approx: Collection[str] = ()) -> str:
    """How a replayed curve is named to a reader.

    ``greedy`` replayed from a pool is the first sample of each order, i.e. SC@1 at the pool's
    temperature, not greedy decoding: it is named so. A strategy reading an approximate signal is
    marked ``(approx., top-k)``.

    >>> strategy_label("greedy", temperature=0.7)
    'SC@1 (first sample at T=0.7)'
    >>> strategy_label("best-of-n:self-certainty", approx={"self-certainty"})
    'best-of-n:self-certainty (approx., top-k)'
    """
    if label == "greedy":
        if temperature is None or not math.isfinite(temperature):
            return "SC@1 (first sample of the pool)"
        return f"SC@1 (first sample at T={temperature:g})"
    score = _score_of(label)
    return f"{label} {APPROX_TAG}" if score is not None and score in approx else label


def _score_of(label: str) -> str | None:
    from thinktwice.eval.curves import parse_specs

    try:
        (spec,) = parse_specs([label])
    except (ConfigError, ValueError):
        return None
    return spec.score_name


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _draw(ax: Any, xs: np.ndarray, c: Any, color: str, label: str, *, lw: float = 1.6) -> None:
    if xs.size == 1:
        ax.errorbar(xs, c.accuracy, yerr=[c.accuracy - c.lo, c.hi - c.accuracy], fmt="o", color=color, ms=5,
                    capsize=3, label=label, zorder=3)
        return
    ax.plot(xs, c.accuracy, color=color, lw=lw, label=label, zorder=3)
    ax.fill_between(xs, c.lo, c.hi, color=color, alpha=0.2, lw=0, zorder=2)


def curve_figure(curves: Sequence[Any], *, x: str = "tokens", title: str = "", log_x: bool = True,
                 labels: Mapping[str, str] | None = None, ncols: int = 4) -> Any:
    """A figure of accuracy (with its 95% band) against ``x``: one panel per strategy.

    ``curves`` are :class:`~thinktwice.eval.curves.Curve`. Every panel shows its strategy (blue),
    self-consistency (the curve labelled ``sc``, grey, the compute-matched baseline) and the
    ``pass@k`` oracle ceiling (dashed), on axes shared by all panels; single-point curves are
    markers with error bars. ``labels`` maps a curve's label to the name shown (default:
    :func:`strategy_label`). The caller closes the figure.
    """
    if x not in _X:
        raise ConfigError(f"x must be one of {', '.join(_X)}, got {x!r}")
    plt = _plt()
    label_x, attr = _X[x]
    names = dict(labels or {})

    def name(c: Any) -> str:
        return names.get(c.label) or strategy_label(c.label)

    sc = next((c for c in curves if c.label == _BASELINE), None)
    oracle = next((c for c in curves if c.label == _ORACLE), None)
    panels = [c for c in curves if c.label not in (_BASELINE, _ORACLE)] or ([sc] if sc is not None else [])
    if not panels:
        raise ConfigError("nothing to plot: no strategy curves")
    cols = max(1, min(ncols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.75 * cols + 0.4, 2.45 * rows + 1.1), sharex=True,
                             sharey=True, squeeze=False)
    for ax, c in zip(axes.flat, panels):
        if oracle is not None:
            ax.plot(np.asarray(getattr(oracle, attr), float), oracle.accuracy, ls="--", color=_ORACLE_COLOR,
                    lw=1.0, zorder=1)
        if sc is not None and c is not sc:
            _draw(ax, np.asarray(getattr(sc, attr), float), sc, _SC_COLOR, "", lw=1.3)
        _draw(ax, np.asarray(getattr(c, attr), float), c, _STRAT_COLOR if c is not sc else _SC_COLOR, "")
        ax.set_title("\n".join(textwrap.wrap(name(c), 34)), fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7.5)
        if log_x:
            _log_axis(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes.flat[: len(panels)]):
        if i + cols >= len(panels):  # the lowest panel of its column: it carries the x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(label_x, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=8)
    handles = [plt.Line2D([], [], color=_STRAT_COLOR, lw=2, label="the panel's strategy (95% band)")]
    if sc is not None:
        handles.append(plt.Line2D([], [], color=_SC_COLOR, lw=2, label="self-consistency SC@k (95% band)"))
    if oracle is not None:
        handles.append(plt.Line2D([], [], color=_ORACLE_COLOR, ls="--", lw=1, label="pass@k (oracle ceiling)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    h = fig.get_figheight()
    fig.suptitle(title or f"accuracy vs {attr.replace('_', ' ')}", fontsize=10, y=1 - 0.08 / h, va="top")
    fig.text(0.5, 1 - 0.36 / h, "95% two-level bootstrap bands; axes shared by all panels", ha="center",
             va="top", fontsize=7.5, color="0.35")
    fig.tight_layout(pad=0.6, rect=(0, 0.35 / h, 1, 1 - 0.5 / h))
    return fig


def _log_axis(ax: Any) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^n (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def curve_png_bytes(curves: Sequence[Any], *, x: str = "tokens", title: str = "", dpi: int = 100,
                    labels: Mapping[str, str] | None = None) -> bytes:
    """The curve plot as PNG bytes."""
    plt = _plt()
    fig = curve_figure(curves, x=x, title=title, labels=labels)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_curve_png(curves: Sequence[Any], path: str | os.PathLike[str], *, x: str = "tokens",
                   title: str = "", labels: Mapping[str, str] | None = None) -> Path:
    """Write the curve plot to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(curve_png_bytes(curves, x=x, title=title, labels=labels))
    return out


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, to inline a plot in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
