"""Linear probes on a model's hidden states that predict whether a response is right (the latent layer of
self-feedback; cf. Azaria & Mitchell, arXiv 2304.13734, and Kadavath et al., arXiv 2207.05221).

Features are the residual stream at the completion's last token at one layer (one teacher-forced pass
of the ``hf`` backend per sample); they are standardised and an L2-regularised logistic regression is
fitted by Newton's method (deterministic; the seed only chooses the held-out problems). The held-out
split is by problem, so samples of one question never sit on both sides. A probe is saved as a single
``.npz``: weights, bias, feature mean and scale, and a JSON metadata string (layer, model, metrics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError, DataError
from thinktwice.eval.calibration import auroc

__all__ = ["Probe", "ProbeConfig", "collect_features", "fit_logistic", "fit_probe"]

FORMAT = "thinktwice-probe-1"


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """``l2``: ridge penalty on the standardised weights (1.0); ``holdout``: share of problems held out
    (0.25; 0 = none); ``seed``: picks the held-out problems; ``max_iter``/``tol``: Newton's stopping rule."""

    l2: float = 1.0
    holdout: float = 0.25
    seed: int = 0
    max_iter: int = 50
    tol: float = 1e-8

    def __post_init__(self) -> None:
        if not (self.l2 > 0 and math.isfinite(self.l2)):
            raise ConfigError(f"l2 must be a finite number > 0, got {self.l2}")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1, got {self.max_iter}")


@dataclass(frozen=True, eq=False)
class Probe:
    """A fitted probe: ``p(correct | h) = sigmoid(w · (h - mean) / std + bias)`` at ``layer`` of ``model``."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    layer: int
    model: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of being right for (n, dim) features."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"probe expects (n, {self.dim}) features, got {x.shape}")
        z = ((x - self.mean) / self.std) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "layer": self.layer, "model": self.model, "bias": self.bias, **dict(self.meta)}
        with p.open("wb") as f:  # a file object: np.savez would otherwise append ".npz"
            np.savez(f, weights=self.weights, mean=self.mean, std=self.std, meta=np.array(json.dumps(meta)))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"probe file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: np.asarray(f[k], dtype=np.float64) for k in ("weights", "mean", "std")}
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{p} is not a probe file ({e})") from e
        if meta.get("format") != FORMAT:
            raise DataError(f"{p}: unknown probe format {meta.get('format')!r}")
        rest = {k: v for k, v in meta.items() if k not in ("format", "layer", "model", "bias")}
        return cls(arrays["weights"], float(meta["bias"]), arrays["mean"], arrays["std"], int(meta["layer"]),
                   str(meta["model"]), rest)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 50,
                 tol: float = 1e-8) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method: minimises
    ``Σ log(1 + exp(-s_i z_i)) + (l2/2)|w|²`` (bias unpenalised); returns (w, b)."""
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-9
    yf = y.astype(np.float64)
    for _ in range(max_iter):
        z = a @ theta
        p = 1.0 / (1.0 + np.exp(-z))
        grad = a.T @ (p - yf) + reg * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < tol:
            break
    return theta[:-1], float(theta[-1])


def _split(groups: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: whole groups, chosen by a seeded permutation."""
    if holdout == 0:
        return np.zeros(groups.shape[0], dtype=bool)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    if uniq.shape[0] < 2:  # one problem: split its samples instead
        idx = rng.permutation(groups.shape[0])[: max(1, round(holdout * groups.shape[0]))]
        mask = np.zeros(groups.shape[0], dtype=bool)
        mask[idx] = True
        return mask
    k = min(uniq.shape[0] - 1, max(1, round(holdout * uniq.shape[0])))
    held = rng.permutation(uniq)[:k]
    return np.isin(groups, held)


def fit_probe(features: np.ndarray, labels: Sequence[bool] | np.ndarray, groups: Sequence[str] | None = None, *,
              layer: int, model: str, config: ProbeConfig | None = None) -> Probe:
    """Fit a probe on (n, d) ``features`` with right/wrong ``labels``; ``groups`` (problem ids) keep a
    problem's samples on one side of the held-out split. ``meta`` reports train / held-out AUROC."""
    cfg = config or ProbeConfig()
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"features must be (n, d) with n = len(labels); got {x.shape} and {y.shape[0]} labels")
    g = np.asarray(groups if groups is not None else [str(i) for i in range(y.shape[0])])
    held = _split(g, cfg.holdout, cfg.seed)
    train = ~held
    if y[train].all() or not y[train].any():
        raise DataError("the training split has only right or only wrong answers: nothing to separate")
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std < 1e-8] = 1.0
    w, b = fit_logistic((x[train] - mean) / std, y[train], cfg.l2, cfg.max_iter, cfg.tol)
    probe = Probe(w, b, mean, std, layer, model)
    s = probe.predict(x)
    meta = {
        "train_auroc": auroc(s[train], y[train]),
        "heldout_auroc": auroc(s[held], y[held]) if held.any() else math.nan,
        "n_train": int(train.sum()), "n_heldout": int(held.sum()),
        "l2": cfg.l2, "seed": cfg.seed, "holdout": cfg.holdout,
    }
    return Probe(w, b, mean, std, layer, model, meta)


async def collect_features(backend: Any, items: Sequence[tuple[Any, str]], layer: int,
                           on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """Hidden state at the last completion token at ``layer`` for each (prompt, completion) in ``items``,
    one teacher-forced pass each; returns (n, d) features and the prompt tokens processed (the cost)."""
    rows, cost = [], 0
    for i, (prompt, text) in enumerate(items):
        hs = await backend.hidden_states(prompt, text, layers=[layer], positions=[-1])
        rows.append(hs.states[0, 0])
        cost += hs.prompt_tokens
        if on_progress is not None:
            on_progress(i + 1, len(items))
    return np.stack(rows) if rows else np.empty((0, 0)), cost
