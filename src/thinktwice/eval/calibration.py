"""Calibration and selective-prediction metrics for confidence signals (METHODS §3).

All functions take ``scores`` (higher = more confident) and boolean ``labels`` (correct or not) as
equal-length arrays without NaN; :func:`signal_report` drops NaN scores first and counts them.

- AUROC: probability that a random correct item outscores a random incorrect one, ties counted ½;
  NaN (never 0.5) when one class is empty.
- ECE: ``Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|`` over ``M`` equal-width bins of [0, 1] (default
  ``M = 10`` as METHODS §3, :data:`DEFAULT_BINS`, shared by the library, the plots and
  ``thinktwice calibrate --bins``; the last bin is closed) or ``M`` equal-mass bins (sorted items
  split as evenly as possible).
- Brier: ``mean (q − c)²``. AURC: mean selective risk over coverages 1/n … n/n.
- Selective accuracy at coverage κ: accuracy of the ``ceil(κ·n)`` most confident items; items tied
  with the last one admitted count at their mean accuracy (the expectation over tie-breaks).

ECE and Brier need a probability; :func:`to_unit` maps each signal's raw score to [0, 1] as
:data:`MAPPINGS` states: probabilities as they are (clipped), logprob-like scores through ``exp``,
unbounded scores through their empirical rank in the pool (``(rank − ½)/n``, ties averaged). For
rank-mapped signals ECE/Brier describe the percentile, not the signal: compare them by AUROC.
A report of a signal computed from approximate statistics (entropy / self-certainty of a
renormalised top-k, ``TokenStat.approx``) has ``approx=True`` and is labelled :data:`APPROX_LABEL`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from thinktwice.errors import ConfigError

__all__ = [
    "APPROX_LABEL",
    "DEFAULT_BINS",
    "MAPPINGS",
    "SignalReport",
    "aurc",
    "auroc",
    "auroc_within",
    "brier",
    "ece",
    "mapping_for",
    "report_label",
    "risk_coverage",
    "selective_accuracy",
    "signal_report",
    "to_unit",
]

MAPPINGS: Mapping[str, str] = {
    # already probabilities
    "path-prob": "identity", "vote-share": "identity", "rpc": "identity", "answer-entropy": "identity",
    "usc-agreement": "identity", "p-true": "identity", "p-true-context": "identity",
    "verbalized": "identity", "self-critique": "identity", "fobar": "identity",
    "self-verification": "identity", "code-exec": "identity",
    # log-probabilities: exp gives a probability (per-token geometric mean / whole sequence)
    "mean-logprob": "exp", "seq-logprob": "exp",
    # negated mean entropy: exp(-H) in (0, 1], the inverse perplexity of the predictive distribution
    "token-entropy": "exp",
    # unbounded: empirical rank in the pool
    "self-certainty": "rank", "deepconf-mean": "rank", "deepconf-tail": "rank",
    "deepconf-bottom10": "rank", "deepconf-lowest": "rank", "reward-model": "rank",
}
_HOW = ("identity", "exp", "rank", "minmax")
DEFAULT_BINS = 10
"""Equal-width ECE bins unless told otherwise (METHODS §3; 15 is the other common choice)."""
APPROX_LABEL = "(approx., top-k)"
"""Suffix of a signal computed from a renormalised top-k instead of the full vocabulary."""


def report_label(signal: str, approx: bool) -> str:
    """The name to show for ``signal``: with :data:`APPROX_LABEL` when its statistics are approximate."""
    return f"{signal} {APPROX_LABEL}" if approx else signal


def mapping_for(signal: str, scores: np.ndarray | None = None) -> str:
    """The mapping of :data:`MAPPINGS`; for an unknown signal ``identity`` when all scores lie in
    [0, 1], else ``rank``."""
    if signal in MAPPINGS:
        return MAPPINGS[signal]
    if scores is not None and scores.size and np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1:
        return "identity"
    return "rank"


def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.concatenate(([True], xs[1:] != xs[:-1]))
    group = np.cumsum(boundaries) - 1
    starts = np.flatnonzero(boundaries)
    ends = np.concatenate((starts[1:], [x.size]))
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(x.size)
    ranks[order] = avg[group]
    return ranks


def to_unit(scores: Sequence[float] | np.ndarray, how: str) -> np.ndarray:
    """Map raw scores to [0, 1]: ``identity`` (clip), ``exp`` (of a log-probability; clipped),
    ``rank`` ((rank − ½)/n) or ``minmax``. NaN stays NaN."""
    if how not in _HOW:
        raise ConfigError(f"unknown mapping {how!r}; use one of {', '.join(_HOW)}")
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, np.nan)
    ok = ~np.isnan(s)
    v = s[ok]
    if v.size == 0:
        return out
    if how == "identity":
        out[ok] = np.clip(v, 0.0, 1.0)
    elif how == "exp":
        out[ok] = np.exp(np.minimum(v, 0.0))
    elif how == "rank":
        out[ok] = (_rankdata(v) - 0.5) / v.size
    else:
        lo, hi = float(v.min()), float(v.max())
        out[ok] = (v - lo) / (hi - lo) if hi > lo else 0.5
    return out


def _arrays(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ConfigError(f"scores and labels must be 1-D and equally long, got {s.shape} and {y.shape}")
    return s, y


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (Mann-Whitney; ties ½); NaN with one class."""
    s, y = _arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = _rankdata(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_within(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, groups: Sequence[str] | np.ndarray
) -> float:
    """AUROC over (correct, incorrect) pairs from the *same* group (problem): how well the signal
    picks among one question's candidates. NaN when no group has both classes."""
    s, y = _arrays(scores, labels)
    g = np.asarray(groups)
    wins = pairs = 0.0
    for key in np.unique(g):
        m = g == key
        yp, ss = y[m], s[m]
        n_pos = int(yp.sum())
        n_neg = yp.size - n_pos
        if n_pos and n_neg:
            r = _rankdata(ss)
            wins += r[yp].sum() - n_pos * (n_pos + 1) / 2
            pairs += n_pos * n_neg
    return wins / pairs if pairs else math.nan


def ece(probs: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
        n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error with ``n_bins`` equal-width (``uniform``) or equal-mass
    (``quantile``) bins; NaN for no items."""
    p, y = _arrays(probs, labels)
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    if p.size == 0:
        return math.nan
    if strategy == "uniform":
        idx = np.clip(np.minimum((p * n_bins).astype(int), n_bins - 1), 0, n_bins - 1)
        conf = np.bincount(idx, weights=p, minlength=n_bins)
        acc = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
        return float(np.abs(acc - conf).sum() / p.size)
    if strategy == "quantile":
        order = np.argsort(p, kind="mergesort")
        total = 0.0
        for chunk in np.array_split(order, min(n_bins, p.size)):
            total += abs(float(y[chunk].sum()) - float(p[chunk].sum()))
        return total / p.size
    raise ConfigError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def brier(probs: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Mean squared error of the probabilities against 0/1 correctness; NaN for no items."""
    p, y = _arrays(probs, labels)
    return float(((p - y) ** 2).mean()) if p.size else math.nan


def risk_coverage(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverages ``k/n`` and the selective risk (error rate) of the ``k`` most confident items,
    k = 1..n, ties resolved by their expected accuracy."""
    s, y = _arrays(scores, labels)
    n = s.size
    if n == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order].astype(float)
    # replace each item's correctness by its tie group's mean: the expectation over tie-breaks
    boundaries = np.concatenate(([True], ss[1:] != ss[:-1]))
    group = np.cumsum(boundaries) - 1
    means = np.bincount(group, weights=yy) / np.bincount(group)
    acc = np.cumsum(means[group]) / np.arange(1, n + 1)
    return np.arange(1, n + 1) / n, 1.0 - acc


def aurc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over coverages 1/n..1); lower is better."""
    _, risk = risk_coverage(scores, labels)
    return float(risk.mean()) if risk.size else math.nan


def selective_accuracy(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                       coverage: float) -> float:
    """Accuracy of the ``ceil(coverage·n)`` most confident items (ties at their mean accuracy)."""
    if not 0 < coverage <= 1:
        raise ConfigError(f"coverage must be in (0, 1], got {coverage}")
    _, risk = risk_coverage(scores, labels)
    if risk.size == 0:
        return math.nan
    k = max(1, math.ceil(coverage * risk.size - 1e-9))
    return float(1.0 - risk[k - 1])


# --- one signal's report with bootstrap intervals --------------------------------------------


@dataclass(frozen=True)
class SignalReport:
    """Metrics of one signal over a pool of scored candidates; ``ci`` maps a metric to its
    bootstrap 95% interval. ``n`` items were scored, ``n_missing`` had no score (NaN). ``approx``:
    the scores came from approximate (top-k renormalised) statistics; show :attr:`label`."""

    signal: str
    n: int
    n_missing: int
    accuracy: float
    mapping: str
    auroc: float
    ece: float
    ece_mass: float
    brier: float
    aurc: float
    auroc_within: float
    selective: dict[float, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_bins: int = DEFAULT_BINS
    approx: bool = False

    @property
    def label(self) -> str:
        """The signal's display name, marked ``(approx., top-k)`` when its statistics are approximate."""
        return report_label(self.signal, self.approx)

    def to_dict(self) -> dict[str, object]:
        return {
            "signal": self.signal, "label": self.label, "approx": self.approx,
            "n": self.n, "n_missing": self.n_missing, "accuracy": self.accuracy,
            "mapping": self.mapping, "auroc": self.auroc, "ece": self.ece, "ece_mass": self.ece_mass,
            "brier": self.brier, "aurc": self.aurc, "auroc_within": self.auroc_within, "n_bins": self.n_bins,
            "selective": {f"{k:g}": v for k, v in self.selective.items()},
            "ci": {k: list(v) for k, v in self.ci.items()},
        }


def _metrics(s: np.ndarray, p: np.ndarray, y: np.ndarray, n_bins: int, coverages: Sequence[float]) -> dict[str, float]:
    out = {"auroc": auroc(s, y), "ece": ece(p, y, n_bins), "brier": brier(p, y), "aurc": aurc(s, y)}
    for c in coverages:
        out[f"sel@{c:g}"] = selective_accuracy(s, y, c)
    return out


def signal_report(
    signal: str,
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    mapping: str | None = None,
    n_bins: int = DEFAULT_BINS,
    coverages: Sequence[float] = (0.5, 0.8, 1.0),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    approx: bool = False,
) -> SignalReport:
    """All metrics of one signal with percentile bootstrap intervals (seeded).

    With ``groups`` (problem ids) the bootstrap resamples whole problems, since the candidates of
    one problem are not independent; otherwise it resamples items. NaN scores are left out.
    ``approx`` marks scores computed from approximate statistics (carried into the report).
    """
    s_all, y_all = _arrays(scores, labels)
    g_all = np.asarray(groups) if groups is not None else np.arange(s_all.size)
    if g_all.shape != s_all.shape:
        raise ConfigError("groups must be as long as scores")
    ok = ~np.isnan(s_all)
    s, y, g = s_all[ok], y_all[ok], g_all[ok]
    how = mapping or mapping_for(signal, s)
    p = to_unit(s, how)
    point = _metrics(s, p, y, n_bins, coverages)
    ci: dict[str, tuple[float, float]] = {}
    if s.size and n_boot > 0:
        rng = np.random.default_rng(seed)
        keys, inverse = np.unique(g, return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(keys.size)]
        draws: dict[str, list[float]] = {k: [] for k in point}
        for _ in range(n_boot):
            pick = rng.integers(0, keys.size, keys.size)
            idx = np.concatenate([members[i] for i in pick])
            for k, v in _metrics(s[idx], p[idx], y[idx], n_bins, coverages).items():
                draws[k].append(v)
        a = (1 - level) / 2
        for k, vals in draws.items():
            arr = np.asarray(vals)
            arr = arr[~np.isnan(arr)]
            ci[k] = (float(np.quantile(arr, a)), float(np.quantile(arr, 1 - a))) if arr.size else (math.nan, math.nan)
    return SignalReport(
        signal=signal, n=int(s.size), n_missing=int((~ok).sum()),
        accuracy=float(y.mean()) if y.size else math.nan, mapping=how,
        auroc=point["auroc"], ece=point["ece"], ece_mass=ece(p, y, n_bins, "quantile") if p.size else math.nan,
        brier=point["brier"], aurc=point["aurc"],
        auroc_within=auroc_within(s, y, g) if groups is not None else math.nan,
        selective={c: point[f"sel@{c:g}"] for c in coverages}, ci=ci, n_bins=n_bins, approx=approx,
    )
