"""Next-token statistics and sampling from one full-vocabulary logits row, vectorised in numpy.

Everything here works on a float32 row of raw logits (one position, the whole vocabulary) and costs
a few passes over it, so an embedded backend can report exact entropy and self-certainty
(Kang et al., arXiv 2502.18581) for every generated token at almost no cost over sampling alone.
No BLAS call is made (no ``np.dot``), so numpy never competes with llama.cpp's threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from thinktwice.errors import ConfigError

__all__ = ["RowStats", "SamplerConfig", "Shifted", "row_stats", "sample_row", "shift_row"]

_BLOCK = 256  # inverse-CDF block width: one cumsum over block sums, then one inside a block


@dataclass(frozen=True, slots=True)
class RowStats:
    """Statistics of one position: chosen-token logprob, entropy and self-certainty (nats), and the
    top-k alternatives as parallel arrays (token ids and logprobs, most likely first)."""

    logprob: float
    entropy: float
    self_certainty: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    """Token sampling settings, applied as llama.cpp does: top-k, then top-p, then min-p on the
    untempered distribution, then temperature on the survivors. ``temperature == 0`` is argmax."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")

    @property
    def is_filtered(self) -> bool:
        return self.top_k > 0 or self.top_p < 1 or self.min_p > 0


class Shifted:
    """A logits row shifted by its maximum, with ``exp`` and its sum computed once.

    ``shifted = row - max`` (<= 0, argmax at ``argmax``), ``e = exp(shifted)``, ``s = e.sum()``;
    then ``log p = shifted - log s``. Holding these lets sampling and statistics share one pass.
    """

    __slots__ = ("argmax", "e", "log_s", "n_finite", "s", "shifted", "sum_finite")

    def __init__(self, row: np.ndarray, full: bool = True) -> None:
        i = int(row.argmax())
        self.argmax = i
        if not full:  # greedy decoding without statistics needs the argmax alone
            return
        self.shifted = row - row[i]
        self.e = np.exp(self.shifted)
        self.s = float(self.e.sum())
        self.log_s = math.log(self.s)
        total = float(self.shifted.sum())
        if math.isfinite(total):
            self.n_finite, self.sum_finite = row.shape[0], total
        else:  # masked logits (-inf): self-certainty drops them (METHODS.md §2.1)
            finite = np.isfinite(self.shifted)
            self.n_finite, self.sum_finite = int(finite.sum()), float(self.shifted[finite].sum())


def shift_row(row: np.ndarray, full: bool = True) -> Shifted:
    """Precompute the shared quantities of one float32 logits row (the row itself is not modified).

    ``full=False`` computes only the argmax (enough for greedy decoding without statistics)."""
    return Shifted(row, full)


def row_stats(sh: Shifted, chosen: int, k: int) -> RowStats:
    """Exact statistics of the full distribution: log p(chosen), entropy ``-Σ p log p``,
    self-certainty ``KL(U||p) = -log V - (1/V) Σ_j log p_j`` over the V finite logits, and the top ``k``.

    Destroys ``sh.shifted`` when ``k > 0`` (top-k by k argmax passes, each masking its winner), so call
    it after sampling.
    """
    log_s = sh.log_s
    lp = float(sh.shifted[chosen]) - log_s
    # Σ p log p = (1/s) Σ e * shifted - log s; einsum avoids BLAS and a temporary.
    ent = log_s - float(np.einsum("i,i->", sh.e, sh.shifted)) / sh.s if sh.n_finite == sh.shifted.shape[0] \
        else _entropy_masked(sh)
    v = sh.n_finite
    sc = -math.log(v) - (sh.sum_finite / v - log_s)
    ids: list[int] = []
    lps: list[float] = []
    if k > 0:
        work = sh.shifted
        for _ in range(min(k, work.shape[0])):
            j = int(work.argmax())
            val = float(work[j])
            if val == -math.inf:
                break
            ids.append(j)
            lps.append(val - log_s)
            work[j] = -np.inf
    return RowStats(lp, max(ent, 0.0), sc, tuple(ids), tuple(lps))


def _entropy_masked(sh: Shifted) -> float:
    finite = np.isfinite(sh.shifted)
    return sh.log_s - float(np.einsum("i,i->", sh.e[finite], sh.shifted[finite])) / sh.s


def sample_row(sh: Shifted, cfg: SamplerConfig, rng: np.random.Generator) -> int:
    """Draw one token id from a shifted row under ``cfg`` with ``rng`` (one uniform draw per token)."""
    if cfg.temperature == 0:
        return sh.argmax
    if not cfg.is_filtered:
        weights = sh.e if cfg.temperature == 1 else np.exp(sh.shifted * np.float32(1.0 / cfg.temperature))
        return _inverse_cdf(weights, rng.random())
    cand = _candidates(sh, cfg)
    vals = sh.shifted[cand]
    q = np.exp((vals - vals.max()) * (1.0 / cfg.temperature))
    c = np.cumsum(q)
    j = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
    return int(cand[min(j, cand.shape[0] - 1)])


def _candidates(sh: Shifted, cfg: SamplerConfig) -> np.ndarray:
    """Token ids surviving top-k, top-p and min-p, sorted by probability (most likely first)."""
    e = sh.e
    n = e.shape[0]
    if cfg.top_k > 0 and cfg.top_k < n:
        cand = np.argpartition(e, n - cfg.top_k)[n - cfg.top_k:]
        cand = cand[np.argsort(-e[cand], kind="stable")]
    elif cfg.top_p < 1:
        cand = _nucleus_pool(e, cfg.top_p)
    else:
        cand = np.flatnonzero(e >= cfg.min_p)  # min-p alone: p / p_max = e
        return cand[np.argsort(-e[cand], kind="stable")]
    if cfg.top_p < 1:
        w = e[cand]
        c = np.cumsum(w)
        cut = int(np.searchsorted(c, cfg.top_p * c[-1], side="left")) + 1  # keep the crossing token
        cand = cand[: max(1, min(cut, cand.shape[0]))]
    if cfg.min_p > 0:
        cand = cand[e[cand] >= cfg.min_p]  # e[cand[0]] == 1 is the maximum, so one always survives
    return cand


def _nucleus_pool(e: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest sorted prefix of tokens that is sure to contain the top-p nucleus.

    Tries the top 64, 256, ... tokens; a prefix whose mass already reaches ``top_p * s`` holds the
    nucleus, so the full sort is needed only for very flat distributions.
    """
    n = e.shape[0]
    target = top_p * float(e.sum())
    m = 64
    while m < n:
        part = np.argpartition(e, n - m)[n - m:]
        part = part[np.argsort(-e[part], kind="stable")]
        if float(e[part].sum()) >= target:
            return part
        m *= 4
    return np.argsort(-e, kind="stable")


def _inverse_cdf(w: np.ndarray, u: float) -> int:
    """Index drawn with probability proportional to ``w`` for a uniform ``u`` in [0, 1)."""
    n = w.shape[0]
    starts = np.arange(0, n, _BLOCK)
    blocks = np.add.reduceat(w, starts)
    cb = np.cumsum(blocks)
    target = u * float(cb[-1])
    b = min(int(np.searchsorted(cb, target, side="right")), starts.shape[0] - 1)
    lo = int(starts[b])
    inner = np.cumsum(w[lo: lo + _BLOCK])
    t = target - (float(cb[b - 1]) if b > 0 else 0.0)
    j = min(int(np.searchsorted(inner, t, side="right")), inner.shape[0] - 1)
    while w[lo + j] == 0 and j > 0:  # rounding landed on a zero-weight tail: step back
        j -= 1
    return lo + j
