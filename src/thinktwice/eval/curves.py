"""Accuracy-vs-compute curves replayed from a stored sample pool, vectorised over permutations.

For every strategy and every budget k = 1..N, each problem's N stored samples are served in B
seeded random orders (the same orders for every strategy: common random numbers); the strategy
decides from its first k (or, for adaptive rules, from the prefix where it stops), and the curve
reports accuracy, generated tokens, calls and prompt tokens averaged over problems and orders,
with two-level bootstrap bands (METHODS §1.3). One pass over j = 0..N-1 updates all B x P
(order, problem) states at once, so a 1319 x 64 x 200 study replays in seconds.

Strategies (spec strings, comma-separated on the CLI):

- ``greedy``: one sample. A pool drawn at temperature > 0 holds no greedy sample, so this is the
  first sample of each order (SC@1) shown as a single point; evaluate a stored greedy run with
  ``thinktwice eval`` for true greedy decoding.
- ``sc`` (self-consistency, Wang et al., arXiv 2203.11171): majority over answer classes; ties go
  to the class that appeared first in the order (as ``strategies/voting.py``).
- ``weighted-sc:<signal>``: the same vote with per-sample weights (non-negative signal scores).
- ``best-of-n:<signal>``: the highest-scoring sample; ties go to the earliest.
- ``adaptive-consistency`` (Aggarwal et al., arXiv 2305.11860): one sample at a time; stop when the
  Beta posterior P(leader ahead) >= 0.95; k is the cap.
- ``esc`` (Li et al., arXiv 2401.10480): windows of 5 (one call each); stop after a window whose
  answers are all present and equivalent; k is the cap.
- ``deepconf`` (Fu et al., arXiv 2508.15260), offline: keep the ceil(0.9 k) traces with the highest
  lowest-group confidence, vote weighted by it. ``deepconf-online``: the first 16 traces are the
  warm-up; the threshold is their 10th percentile of lowest-group confidence; a later trace stops
  at the first window whose mean falls below it (its tokens up to there are counted, it casts no
  vote).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thinktwice.errors import ConfigError
from thinktwice.eval.metrics import pass_at_k_curve, two_level_bootstrap
from thinktwice.eval.pool_data import PoolData

__all__ = [
    "Curve",
    "CurveSpec",
    "PoolData",
    "beta_stop_table",
    "parse_specs",
    "pass_at_k_points",
    "permutations",
    "replay",
    "replay_detail",
    "summarize",
    "table_ks",
]

_ALIASES = {"self-consistency": "sc", "maj": "sc", "majority": "sc", "weighted-vote": "weighted-sc",
            "bon": "best-of-n", "adaptive": "adaptive-consistency", "ac": "adaptive-consistency"}
_KINDS = ("greedy", "sc", "weighted-sc", "best-of-n", "adaptive-consistency", "esc", "deepconf",
          "deepconf-online", "pass@k")


@dataclass(frozen=True, slots=True)
class CurveSpec:
    """One replayed strategy and its settings.

    ``signal`` names the per-sample score for weighted-sc / best-of-n / deepconf; ``threshold`` is
    adaptive-consistency's stopping probability; ``window`` ESC's window; ``keep`` DeepConf's
    kept fraction (offline); ``warmup`` and ``percentile`` DeepConf-online's warm-up size and
    confidence percentile (90 keeps about 90% of later traces).
    """

    kind: str
    signal: str | None = None
    threshold: float = 0.95
    window: int = 5
    keep: float = 0.9
    warmup: int = 16
    percentile: float = 90.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown curve strategy {self.kind!r}; choose from {', '.join(_KINDS)}")
        if self.kind in ("weighted-sc", "best-of-n") and not self.signal:
            raise ConfigError(f"{self.kind} needs a signal, e.g. '{self.kind}:self-certainty'")
        if not 0.5 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0.5, 1), got {self.threshold}")
        if self.window < 1 or self.warmup < 1:
            raise ConfigError("window and warmup must be >= 1")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep must be in (0, 1], got {self.keep}")
        if not 0 <= self.percentile <= 100:
            raise ConfigError(f"percentile must be in [0, 100], got {self.percentile}")

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.signal}" if self.signal else self.kind

    @property
    def score_name(self) -> str | None:
        """The pool score this strategy reads (None when it reads none)."""
        if self.kind in ("deepconf", "deepconf-online"):
            return self.signal or "deepconf-lowest"
        return self.signal


def parse_specs(text: str | Sequence[str]) -> list[CurveSpec]:
    """Parse ``"greedy,sc,weighted-sc:self-certainty,esc"`` (or a list of such names)."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    out = []
    for item in items:
        kind, _, arg = item.partition(":")
        kind = _ALIASES.get(kind, kind)
        if kind == "esc" and arg:
            out.append(CurveSpec("esc", window=_int(arg, item)))
        elif kind == "adaptive-consistency" and arg:
            out.append(CurveSpec(kind, threshold=_float(arg, item)))
        else:
            out.append(CurveSpec(kind, signal=arg or None))
    if not out:
        raise ConfigError("no strategies given")
    return out


def _int(v: str, item: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"{item!r}: expected an integer after ':'") from None


def _float(v: str, item: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ConfigError(f"{item!r}: expected a number after ':'") from None


@dataclass(frozen=True, slots=True, eq=False)
class Curve:
    """One strategy's curve: per budget k, means over problems and orders, and the accuracy band.

    ``correct`` is the (B, P, K) per-order, per-problem correctness behind ``accuracy`` (kept for
    paired differences); ``samples`` is the mean number of samples actually used.
    """

    label: str
    ks: np.ndarray
    accuracy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tokens: np.ndarray
    calls: np.ndarray
    prompt_tokens: np.ndarray
    samples: np.ndarray
    correct: np.ndarray | None = field(default=None, repr=False)

    def at(self, k: int) -> dict[str, float]:
        """The curve's values at budget ``k`` (KeyError-free: ConfigError if k is not on it)."""
        hits = np.nonzero(self.ks == k)[0]
        if not hits.size:
            raise ConfigError(f"{self.label}: no point at k={k}")
        i = int(hits[0])
        return {"k": int(k), "accuracy": float(self.accuracy[i]), "lo": float(self.lo[i]),
                "hi": float(self.hi[i]), "tokens": float(self.tokens[i]), "calls": float(self.calls[i]),
                "prompt_tokens": float(self.prompt_tokens[i]), "samples": float(self.samples[i])}

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "ks": self.ks.tolist(), "accuracy": self.accuracy.tolist(),
                "lo": self.lo.tolist(), "hi": self.hi.tolist(), "tokens": self.tokens.tolist(),
                "calls": self.calls.tolist(), "prompt_tokens": self.prompt_tokens.tolist(),
                "samples": self.samples.tolist()}


def permutations(n_problems: int, n_samples: int, n_perm: int, seed: int = 0) -> np.ndarray:
    """Seeded independent orders of each problem's samples: an int array of shape (B, P, N)."""
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.arange(n_samples, dtype=np.int32), (n_perm, n_problems, n_samples))
    return rng.permuted(base, axis=2)


def beta_stop_table(n: int) -> np.ndarray:
    """P(leader ahead) for leading/second counts (v1, v2) <= n under a uniform prior (arXiv 2305.11860).

    ``P = ∫_{.5}^{1} u^v1 (1-u)^v2 du / B(v1+1, v2+1)``, which for integers equals
    ``P(Binomial(v1+v2+1, 1/2) <= v1)``. Returns an (n+1, n+1) table indexed [v1, v2].
    """
    m = 2 * n + 2
    # log binomial pmf at 1/2 for every total size t and count j, via lgamma (exact enough)
    t = np.arange(m)[:, None]
    j = np.arange(m)[None, :]
    with np.errstate(invalid="ignore"):
        lg = np.vectorize(math.lgamma)
        logc = lg(t + 1) - lg(np.minimum(j, t) + 1) - lg(np.maximum(t - j, 0) + 1)
    pmf = np.where(j <= t, np.exp(logc - t * math.log(2)), 0.0)
    cdf = np.cumsum(pmf, axis=1)
    v1 = np.arange(n + 1)[:, None]
    v2 = np.arange(n + 1)[None, :]
    return cdf[v1 + v2 + 1, np.broadcast_to(v1, (n + 1, n + 1))]


def _weights(pool: PoolData, name: str) -> np.ndarray:
    """Non-negative float weights of signal ``name`` (NaN -> 0)."""
    s = pool.score(name)
    if np.any(s[np.isfinite(s)] < 0):
        raise ConfigError(
            f"signal {name!r} has negative scores; vote weights must be non-negative "
            "(use e.g. path-prob instead of mean-logprob)"
        )
    return np.where(np.isfinite(s), s, 0.0)


def fixed_weights(pool: PoolData, name: str) -> np.ndarray:
    """Vote weights as int64 fixed-point numbers (P, N).

    Weighted tallies are then exact and independent of summation order, so ties are real ties
    (broken by first appearance) in the vectorised replay and in any reference alike. The scale
    keeps every tally of N samples below 2**40 (a relative resolution of about 1e-12 of the largest).
    """
    w = _weights(pool, name)
    top = float(w.max()) if w.size else 0.0
    scale = 2.0**40 / (max(1, w.shape[1]) * top) if top > 0 else 1.0
    return np.round(w * scale).astype(np.int64)


def replay(
    pool: PoolData,
    specs: Sequence[CurveSpec],
    *,
    n_perm: int = 200,
    seed: int = 0,
    orders: np.ndarray | None = None,
    native_n: bool = False,
    n_boot: int = 1000,
    keep_correct: bool = True,
) -> list[Curve]:
    """Replay ``specs`` over ``pool`` and return one Curve per spec (plus none for duplicates).

    ``orders`` (B, P, N) overrides the seeded permutations (e.g. to match a live replay).
    ``native_n`` says the backend returns n samples per call (SC then costs one call); otherwise
    every sample is its own call. ESC always costs one call per window, adaptive-consistency one
    call per sample (the paper's sequential rule). Prompt tokens = calls x the
    problem's prompt length.
    """
    P, N = pool.labels.shape
    if P == 0 or N == 0:
        raise ConfigError("the pool is empty: no problem has samples")
    if orders is None:
        orders = permutations(P, N, n_perm, seed)
    orders = np.asarray(orders)
    if orders.shape[1:] != (P, N):
        raise ConfigError(f"orders must have shape (B, {P}, {N}), got {orders.shape}")
    eng = _Engine(pool, orders, native_n)
    curves = []
    for i, spec in enumerate(specs):
        correct, used, calls, tokens = eng.run(spec)
        ks = np.arange(1, correct.shape[2] + 1)
        lo, hi = two_level_bootstrap(correct, n_boot=n_boot, seed=seed + 7919 * (i + 1))
        curves.append(Curve(
            spec.label, ks, correct.mean(axis=(0, 1)), lo, hi, tokens.mean(axis=(0, 1)),
            calls.mean(axis=(0, 1)), (calls * pool.prompt_tokens[None, :, None]).mean(axis=(0, 1)),
            used.mean(axis=(0, 1)), correct if keep_correct else None,
        ))
    return curves


def replay_detail(
    pool: PoolData, spec: CurveSpec, orders: np.ndarray, *, native_n: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per order, problem and budget: (correct, samples used, calls, generated tokens), each (B, P, K).

    What :func:`replay` averages; for checking a replay against live strategy runs on the same orders.
    """
    orders = np.asarray(orders)
    if orders.ndim != 3 or orders.shape[1:] != pool.shape:
        raise ConfigError(f"orders must have shape (B, {pool.shape[0]}, {pool.shape[1]}), got {orders.shape}")
    return _Engine(pool, orders, native_n).run(spec)


def pass_at_k_points(pool: PoolData, *, n_boot: int = 1000, seed: int = 0) -> Curve:
    """The oracle ceiling: unbiased pass@k for k = 1..N with a bootstrap band over problems."""
    P, N = pool.labels.shape
    n = np.full(P, N)
    c = pool.correct.sum(axis=1)
    ks = np.arange(1, N + 1)
    per = pass_at_k_curve(n, c, ks.tolist())  # (P, K)
    lo, hi = two_level_bootstrap(per[None], n_boot=n_boot, seed=seed)
    mean_tok = pool.completion_tokens.mean()
    return Curve("pass@k", ks, per.mean(axis=0), lo, hi, ks * mean_tok, ks.astype(float),
                 ks * pool.prompt_tokens.mean(), ks.astype(float), None)


class _Engine:
    """Permuted views of the pool, processed in chunks of orders so the (b, P, N, C) work fits in cache.

    Every vote is computed for all prefixes at once: one-hot answers (b, P, N, C) are cumulated
    along the order axis, giving each class's count / weight after every sample; the winner is the
    largest tally, ties going to the class that appeared first.
    """

    def __init__(self, pool: PoolData, orders: np.ndarray, native_n: bool, chunk_elems: int = 6_000_000) -> None:
        B, P, N = orders.shape
        self.pool = pool
        self.native_n = native_n
        self.shape = (B, P, N)
        self.flat = orders.astype(np.int64) + (np.arange(P, dtype=np.int64) * N)[None, :, None]
        self.C = C = max(1, pool.class_correct.shape[1])
        ldt = np.int16 if C < 2**15 else np.int32
        self.L = pool.labels.ravel().astype(ldt)[self.flat]
        self.tok = pool.completion_tokens.ravel().astype(np.float64)[self.flat]
        self.cumtok = np.concatenate([np.zeros((B, P, 1)), np.cumsum(self.tok, axis=2)], axis=2)
        self.cc = np.concatenate([pool.class_correct, np.zeros((P, 1), bool)], axis=1)
        self.arC = np.arange(C, dtype=ldt)
        self.cdt = np.int16 if (N + 1) * (N + 2) < 2**15 else np.int32
        self.step = max(1, chunk_elems // max(1, P * N * C))
        self._sc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def chunks(self) -> list[slice]:
        B = self.shape[0]
        return [slice(b0, min(B, b0 + self.step)) for b0 in range(0, B, self.step)]

    def permuted(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).ravel()[self.flat]

    def correct_of(self, win: np.ndarray) -> np.ndarray:
        P = self.shape[1]
        return self.cc[np.arange(P)[None, :, None], np.where(win < 0, self.C, win)]

    def _first_seen(self, oh: np.ndarray) -> np.ndarray:
        N = self.shape[2]
        return np.where(oh.any(axis=2), oh.argmax(axis=2), N).astype(self.cdt)  # (b, P, C)

    def _int_winner(self, tallies: np.ndarray, fs: np.ndarray, alive: np.ndarray | None,
                    any_seen: np.ndarray) -> np.ndarray:
        """Largest integer tally per prefix, ties to the earliest class; -1 before any answer.

        ``alive`` masks classes with no counted member (DeepConf drops); classes not seen yet in
        the prefix always lose to seen ones, since their first appearance is later.
        """
        N = self.shape[2]
        key = tallies * (N + 1) + (N - fs.astype(np.int64))[:, :, None, :]
        if alive is not None:
            key = np.where(alive, key, -1)
        return np.where(any_seen, key.argmax(axis=-1), -1)

    # -- majority vote, shared by sc / adaptive / esc ---------------------------------------------
    def majority(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(correct, leader count v1, runner-up count v2) after every prefix, each (B, P, N)."""
        if self._sc is not None:
            return self._sc
        B, P, N = self.shape
        C = self.C
        correct = np.empty((B, P, N), dtype=bool)
        v1 = np.empty((B, P, N), dtype=self.cdt)
        v2 = np.zeros((B, P, N), dtype=self.cdt)
        for sl in self.chunks():
            oh = self.L[sl][..., None] == self.arC
            counts = oh.cumsum(axis=2, dtype=self.cdt)
            fs = self._first_seen(oh)
            key = counts * self.cdt(N + 1) + (self.cdt(N) - fs)[:, :, None, :]
            win = key.argmax(axis=-1)
            top = np.take_along_axis(counts, win[..., None], axis=-1)[..., 0]
            correct[sl] = self.correct_of(np.where(top > 0, win, -1))
            v1[sl] = top
            if C >= 2:
                v2[sl] = np.where(self.arC == win[..., None], 0, counts).max(axis=-1)
        self._sc = (correct, v1, v2)
        return self._sc

    # -- per-strategy replays ---------------------------------------------------------------------
    def run(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(correct, samples used, calls, generated tokens), each (B, P, K)."""
        B, P, N = self.shape
        ks = np.arange(1, N + 1, dtype=np.float64)
        kind = spec.kind
        if kind in ("adaptive-consistency", "esc"):
            return self._stopping(spec)
        if kind == "deepconf-online":
            return self._deepconf_online(spec)
        if kind in ("sc", "greedy"):
            correct = self.majority()[0]
        elif kind == "weighted-sc":
            correct = self._weighted(fixed_weights(self.pool, spec.signal or ""), keep=1.0)
        elif kind == "deepconf":
            correct = self._weighted(fixed_weights(self.pool, spec.score_name or ""), keep=spec.keep)
        elif kind == "best-of-n":
            correct = self._best_of_n(self.pool.score(spec.signal or ""))
        else:
            raise ConfigError(f"{kind!r} is not replayable as a curve")
        used = np.broadcast_to(ks, (B, P, N))
        calls = np.ones((B, P, N)) if self.native_n else used
        tokens = self.cumtok[:, :, 1:]
        if kind == "greedy":
            return correct[:, :, :1], used[:, :, :1], calls[:, :, :1], tokens[:, :, :1]
        return correct, used, calls, tokens

    def _stopping(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        N = self.shape[2]
        sc_correct, v1, v2 = self.majority()
        if spec.kind == "adaptive-consistency":
            fire = beta_stop_table(N)[v1, v2] >= spec.threshold
            stop = np.where(fire.any(axis=2), fire.argmax(axis=2) + 1, N + 1)
        else:
            stop = self._esc_stop(spec.window)
        ks = np.arange(1, N + 1)
        used = np.minimum(stop[:, :, None], ks[None, None, :])  # (B, P, K) samples drawn
        correct = np.take_along_axis(sc_correct, used - 1, axis=2)
        tokens = np.take_along_axis(self.cumtok, used, axis=2)
        if spec.kind == "esc":  # one call of n = window per window, the prompt re-sent each time
            calls = np.ceil(used / spec.window)
        else:
            calls = used.astype(np.float64)
        return correct, used.astype(np.float64), calls, tokens

    def _esc_stop(self, w: int) -> np.ndarray:
        """First prefix length ending a full window of identical answers (N + 1 when none)."""
        B, P, N = self.shape
        nwin = N // w
        stop = np.full((B, P), N + 1, dtype=np.int64)
        if nwin == 0:
            return stop
        win = self.L[:, :, : nwin * w].reshape(B, P, nwin, w)
        # all answers equal and present (a window of no-answers does not stop, as in strategies/adaptive.py)
        same = np.all(win == win[..., :1], axis=3) & (win[..., 0] >= 0)
        any_same = same.any(axis=2)
        stop[any_same] = (same.argmax(axis=2)[any_same] + 1) * w
        return stop

    def _weighted(self, weights: np.ndarray, keep: float) -> np.ndarray:
        """Weighted vote over each prefix, after dropping the k - ceil(keep k) lowest-weight traces."""
        B, P, N = self.shape
        Wp = weights.ravel()[self.flat]  # int64 fixed point
        drops = np.array([k - math.ceil(keep * k - 1e-9) for k in range(1, N + 1)])
        D = int(drops.max())
        seen = np.maximum.accumulate(self.L >= 0, axis=2)
        out = np.empty((B, P, N), dtype=bool)
        for sl in self.chunks():
            L, W = self.L[sl], Wp[sl]
            oh = L[..., None] == self.arC
            tallies = np.cumsum(np.where(oh, W[..., None], 0), axis=2)
            alive = None
            if D:
                dt, dc = self._dropped(L, W, drops, D)
                tallies -= dt
                alive = oh.cumsum(axis=2, dtype=self.cdt) > dc
            win = self._int_winner(tallies, self._first_seen(oh), alive, seen[sl])
            out[sl] = self.correct_of(win)
        return out

    def _dropped(self, L: np.ndarray, W: np.ndarray, drops: np.ndarray, D: int) -> tuple[np.ndarray, np.ndarray]:
        """Tallies and counts of the drops[k] lowest-weight traces of every prefix, (b, P, N, C) each.

        A sorted buffer of the D lowest (weight, position) traces is carried along the order
        (equal weights: the earlier trace counts as lower); its first drops[k] entries after
        sample k are scattered into per-class sums with one bincount.
        """
        b, P, N = L.shape
        R, C = b * P, self.C
        Lf, Wf = L.reshape(R, N), W.reshape(R, N)
        big = np.iinfo(np.int64).max
        buf_v = np.full((R, D), big, dtype=np.int64)
        buf_l = np.full((R, D), -1, dtype=np.int64)
        hist_v = np.empty((R, N, D), dtype=np.int64)
        hist_l = np.empty((R, N, D), dtype=np.int64)
        idx = np.arange(D)
        for j in range(N):
            w, lab = Wf[:, j], Lf[:, j]
            pos = (buf_v <= w[:, None]).sum(axis=1)[:, None]
            before, at = idx < pos, idx == pos
            buf_v = np.where(before, buf_v, np.where(at, w[:, None], np.roll(buf_v, 1, axis=1)))
            buf_l = np.where(before, buf_l, np.where(at, lab[:, None], np.roll(buf_l, 1, axis=1)))
            hist_v[:, j], hist_l[:, j] = buf_v, buf_l
        valid = (idx[None, None, :] < drops[None, :, None]) & (hist_l >= 0)
        cell = (np.arange(R * N).reshape(R, N, 1) * C + hist_l)[valid]
        dt = np.bincount(cell, weights=hist_v[valid].astype(np.float64), minlength=R * N * C)
        dc = np.bincount(cell, minlength=R * N * C)
        return (np.rint(dt).astype(np.int64).reshape(b, P, N, C),
                dc.astype(self.cdt).reshape(b, P, N, C))

    def _best_of_n(self, scores: np.ndarray) -> np.ndarray:
        B, P, N = self.shape
        S = self.permuted(np.where(np.isfinite(scores), scores, -np.inf))
        run = np.maximum.accumulate(S, axis=2)
        record = np.ones((B, P, N), dtype=bool)
        record[:, :, 1:] = S[:, :, 1:] > run[:, :, :-1]  # strict: ties keep the earlier sample
        chosen = np.maximum.accumulate(np.where(record, np.arange(N), 0), axis=2)
        return self.correct_of(np.take_along_axis(self.L, chosen, axis=2).astype(np.int64))

    def _deepconf_online(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        B, P, N = self.shape
        name = spec.score_name or "deepconf-lowest"
        conf = self.permuted(_weights(self.pool, name))  # (B, P, N) lowest-group confidence
        W = min(spec.warmup, N)
        thr = np.percentile(conf[:, :, :W], 100.0 - spec.percentile, axis=2)  # (B, P)
        used_tok = self.tok.copy()
        kept = np.ones((B, P, N), dtype=bool)
        if N > W:
            stopped = conf[:, :, W:] < thr[:, :, None]
            kept[:, :, W:] = ~stopped
            later = self.flat[:, :, W:] - (np.arange(P) * N)[None, :, None]
            used_tok[:, :, W:] = np.where(stopped, self.pool.stop_tokens(later, thr), self.tok[:, :, W:])
        Wi = fixed_weights(self.pool, name).ravel()[self.flat]
        seen = np.maximum.accumulate((self.L >= 0) & kept, axis=2)
        out = np.empty((B, P, N), dtype=bool)
        for sl in self.chunks():
            oh = (self.L[sl][..., None] == self.arC) & kept[sl][..., None]
            tallies = np.cumsum(np.where(oh, Wi[sl][..., None], 0), axis=2)
            out[sl] = self.correct_of(self._int_winner(tallies, self._first_seen(oh), None, seen[sl]))
        ks = np.arange(1, N + 1, dtype=np.float64)
        used = np.broadcast_to(ks, (B, P, N))
        if self.native_n:
            calls = np.broadcast_to(np.minimum(ks, 1 + np.maximum(ks - W, 0)), (B, P, N))
        else:
            calls = used
        return out, used, calls, np.cumsum(used_tok, axis=2)


def table_ks(n: int) -> list[int]:
    """Budgets shown in tables: 1, 2, 4, 8, ... and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def summarize(curves: Sequence[Curve], ks: Sequence[int] | None = None) -> list[dict[str, float | str]]:
    """Rows (label, k, accuracy, lo, hi, tokens, calls, prompt_tokens) for a table."""
    rows: list[dict[str, float | str]] = []
    for c in curves:
        for k in ks if ks is not None else c.ks.tolist():
            if k in c.ks:
                rows.append({"strategy": c.label, **c.at(int(k))})
    return rows

