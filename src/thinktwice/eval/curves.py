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

Vote weights are fixed-point integers (:func:`fixed_weights`), so tallies are exact and ties are
real ties, broken by first appearance among the drawn traces (for deepconf-online, among the kept
ones). DeepConf offline drops the lowest-weight traces, the earlier of equal weights first. Where
``strategies/deepconf.py`` keeps every trace tied with the cut-off, this replay keeps exactly
ceil(0.9 k); the two differ only on exactly tied confidences. SC, adaptive-consistency and ESC
match ``strategies/`` sample for sample (tests replay them live through ``lm/pool.PoolBackend``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """Vote weights as fixed-point integers (P, N): int32 when N <= 180, else int64.

    Weighted tallies are then exact and independent of summation order, so ties are real ties
    (broken by first appearance) in the vectorised replay and in any reference alike. The pool's
    largest weight maps to U units with ``N * U * (N + 1) < 2**31`` (U = 516,000 for N = 64, a
    resolution of 2e-6 of the largest weight), so a tally times N + 1 plus a tie-break index fits
    int32; past N = 180, int64 with U = 2**40 / N. Zero (and missing) weights count one unit.
    """
    w = _weights(pool, name)
    n = max(1, w.shape[1])
    top = float(w.max()) if w.size else 0.0
    units = (2**31 - 1 - n) // (n * (n + 1))
    dtype: type[np.signedinteger] = np.int32
    if units < 2**16:
        units, dtype = 2**40 // n, np.int64
    scale = units / top if top > 0 else 1.0
    # at least one unit: a kept trace always outweighs none (zero weights would tie with absent votes)
    return np.clip(np.round(w * scale), 1, units).astype(dtype)


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
    workers: int | None = None,
) -> list[Curve]:
    """Replay ``specs`` over ``pool`` and return one Curve per spec (plus none for duplicates).

    ``orders`` (B, P, N) overrides the seeded permutations (e.g. to match a live replay).
    ``native_n`` says the backend returns n samples per call (SC then costs one call); otherwise
    every sample is its own call. ESC always costs one call per window, adaptive-consistency one
    call per sample (the paper's sequential rule). Prompt tokens = calls x the
    problem's prompt length. ``workers`` threads share the chunks of orders (default: the CPU
    count, at most 8).
    """
    P, N = pool.labels.shape
    if P == 0 or N == 0:
        raise ConfigError("the pool is empty: no problem has samples")
    if orders is None:
        orders = permutations(P, N, n_perm, seed)
    orders = np.asarray(orders)
    if orders.shape[1:] != (P, N):
        raise ConfigError(f"orders must have shape (B, {P}, {N}), got {orders.shape}")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    eng = _Engine(pool, orders, native_n, workers=workers)
    eng.want_counts = any(s.kind == "adaptive-consistency" for s in specs)
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
    eng = _Engine(pool, orders, native_n)
    eng.want_counts = spec.kind == "adaptive-consistency"
    return eng.run(spec)


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

    def __init__(self, pool: PoolData, orders: np.ndarray, native_n: bool, chunk_elems: int = 1_000_000,
                 workers: int = 1) -> None:
        B, P, N = orders.shape
        self.workers = max(1, workers)
        self.pool = pool
        self.native_n = native_n
        self.shape = (B, P, N)
        idt = np.int32 if P * N < 2**31 else np.int64
        self.flat = orders.astype(idt) + (np.arange(P, dtype=idt) * N)[None, :, None]
        self.C = C = max(1, pool.class_correct.shape[1])
        ldt = np.int16 if C < 2**15 else np.int32
        self.L = pool.labels.ravel().astype(ldt)[self.flat]
        # token counts are integers: float32 sums are exact below 2**24 tokens per problem
        self.tok = pool.completion_tokens.ravel().astype(np.float32)[self.flat]
        self.cumtok = np.zeros((B, P, N + 1), dtype=np.float32)
        np.cumsum(self.tok, axis=2, out=self.cumtok[:, :, 1:])
        self.cc = np.concatenate([pool.class_correct, np.zeros((P, 1), bool)], axis=1)
        self.arC = np.arange(C, dtype=ldt)
        self.cdt = np.int16 if (N + 1) * (N + 2) < 2**15 else np.int32
        self.small = np.int8 if N < 127 else (np.int16 if N < 2**15 else np.int32)
        self.step = max(1, chunk_elems // max(1, P * N * C))
        self._sc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.want_counts = False
        self._rel = (np.empty((B, P, N), dtype=self.L.dtype), np.empty((B, P, C), dtype=np.intp))
        self._rel_done = np.zeros(B, dtype=bool)

    def chunks(self, step: int | None = None) -> list[slice]:
        B, st = self.shape[0], step or self.step
        return [slice(b0, min(B, b0 + st)) for b0 in range(0, B, st)]

    def each_chunk(self, fn: Callable[[slice], None], step: int | None = None) -> None:
        """Run ``fn`` on every chunk of orders (``step`` orders each; default: cache-sized); chunks
        write disjoint slices, so threads are safe (numpy releases the GIL inside its loops)."""
        chunks = self.chunks(step)
        if self.workers <= 1 or len(chunks) == 1:
            for sl in chunks:
                fn(sl)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            list(ex.map(fn, chunks))

    def permuted(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).ravel()[self.flat]

    def correct_of(self, win: np.ndarray) -> np.ndarray:
        P = self.shape[1]
        return self.cc[np.arange(P)[None, :, None], np.where(win < 0, self.C, win)]

    def _relabel(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Renumber each order's classes by first appearance, so that np.argmax's first-maximum
        rule *is* the tie rule (earliest class wins). Returns the renumbered labels (b, P, N) and,
        per new id, the original class (b, P, C; C = none)."""
        N, C = self.shape[2], self.C
        oh = L[..., None] == self.arC
        fs = np.where(oh.any(axis=2), oh.argmax(axis=2), N)  # (b, P, C) first position per class
        order_c = np.argsort(fs, axis=-1, kind="stable")  # new id -> original class
        rank = np.empty_like(order_c)
        np.put_along_axis(rank, order_c, np.broadcast_to(np.arange(C), order_c.shape), axis=-1)
        Lr = np.take_along_axis(rank, np.maximum(L, 0).astype(np.intp), axis=2)
        Lr = np.where(L >= 0, Lr, -1).astype(L.dtype)
        orig = np.where(np.take_along_axis(fs, order_c, axis=-1) < N, order_c, C)
        return Lr, orig

    def relabelled(self, sl: slice) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_relabel` of the orders in ``sl``, computed once per replay and shared by strategies."""
        if not self._rel_done[sl].all():  # chunks are disjoint, so threads never share a slice
            Lr, orig = self._relabel(self.L[sl])
            self._rel[0][sl], self._rel[1][sl] = Lr, orig
            self._rel_done[sl] = True
        return self._rel[0][sl], self._rel[1][sl]

    def _correct_rel(self, win: np.ndarray, orig: np.ndarray) -> np.ndarray:
        """Correctness of renumbered winners ``win`` (b, P, K; -1 = none)."""
        b, P, _ = win.shape
        ccr = self.cc[np.arange(P)[None, :, None], orig]  # (b, P, C): is new id correct
        ccr = np.concatenate([ccr, np.zeros((b, P, 1), bool)], axis=2)  # -1 -> the False column
        return np.take_along_axis(ccr, np.where(win < 0, self.C, win).astype(np.intp), axis=2)

    # -- majority vote, shared by sc / adaptive / esc ---------------------------------------------
    def majority(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(correct, leader count v1, runner-up count v2) after every prefix, each (B, P, N).

        The counts are computed only when ``want_counts`` is set (adaptive-consistency needs
        them); otherwise v1 and v2 are empty.
        """
        if self._sc is not None and (self._sc[1].size or not self.want_counts):
            return self._sc
        B, P, N = self.shape
        C = self.C
        counts_too = self.want_counts
        correct = np.empty((B, P, N), dtype=bool)
        v1 = np.empty((B, P, N) if counts_too else 0, dtype=self.small)
        v2 = np.zeros((B, P, N) if counts_too else 0, dtype=self.small)
        seen = np.maximum.accumulate(self.L >= 0, axis=2)

        def chunk(sl: slice) -> None:
            Lr, orig = self.relabelled(sl)
            counts = (Lr[..., None] == self.arC).cumsum(axis=2, dtype=self.small)
            win = counts.argmax(axis=-1)  # first maximum = the class that appeared first
            correct[sl] = self._correct_rel(np.where(seen[sl], win, -1), orig)
            if counts_too:
                v1[sl] = np.take_along_axis(counts, win[..., None], axis=-1)[..., 0]
                if C >= 2:
                    counts[self.arC == win[..., None]] = 0
                    v2[sl] = counts.max(axis=-1)

        self.each_chunk(chunk)
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
        if spec.kind == "adaptive-consistency":
            self.want_counts = True
        sc_correct, v1, v2 = self.majority()
        if spec.kind == "adaptive-consistency":
            # P(leader ahead) falls as the runner-up gains: per leader count v1, the largest v2
            # that still fires (-1: none), so the rule is one small lookup and a comparison
            fires = beta_stop_table(N) >= spec.threshold
            lim = np.where(fires.any(axis=1), (N + 1) - np.argmax(fires[:, ::-1], axis=1) - 1, -1)
            fire = v2 <= lim.astype(np.int16)[v1]
            stop = np.where(fire.any(axis=2), fire.argmax(axis=2) + 1, N + 1)
        else:
            stop = self._esc_stop(spec.window)
        ks = np.arange(1, N + 1, dtype=np.int16)
        before = ks[None, None, :] < stop[:, :, None]  # (B, P, K): still sampling at budget k
        at = np.minimum(stop, N)[:, :, None] - 1
        correct = np.where(before, sc_correct, np.take_along_axis(sc_correct, at, axis=2))
        tokens = np.where(before, self.cumtok[:, :, 1:], np.take_along_axis(self.cumtok, at + 1, axis=2))
        used = np.where(before, ks, (at + 1).astype(np.int16))
        if spec.kind == "esc":  # one call of n = window per window, the prompt re-sent each time
            calls = (used + (spec.window - 1)) // spec.window
        else:
            calls = used
        return correct, used, calls, tokens

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
        Wp = weights.ravel()[self.flat]  # fixed point (>= 1 unit), see fixed_weights
        drops = np.array([k - math.ceil(keep * k - 1e-9) for k in range(1, N + 1)])
        D = int(drops.max())
        answered = self.L >= 0
        seen = np.maximum.accumulate(answered, axis=2)
        out = np.empty((B, P, N), dtype=bool)

        def vote(sl: slice, drop: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
            W = Wp[sl]
            Lr, orig = self.relabelled(sl)
            votes = (Lr[..., None] == self.arC) * W[..., None]
            tallies = np.empty(votes.shape, dtype=W.dtype)  # C-contiguous: edited flat below
            np.cumsum(votes, axis=2, out=tallies)
            any_vote = seen[sl]
            if drop is not None:
                lab, w, dropped_answers = drop
                self._subtract(tallies, lab, w, drops, D)
                # a class whose members were all dropped has tally 0 and loses to any kept class
                # (weights are >= 1 unit); with no kept answer at all there is no winner
                any_vote = np.cumsum(answered[sl], axis=2) > dropped_answers
            win = tallies.argmax(axis=-1)  # first maximum = the class that appeared first
            out[sl] = self._correct_rel(np.where(any_vote, win, -1), orig)

        if not D:
            self.each_chunk(lambda sl: vote(sl, None))
            return out

        def group(sl: slice) -> None:
            # the drop buffer runs over many orders at once (few, wide ufunc calls); the
            # (order, problem, prefix, class) tallies then go one cache-sized chunk at a time
            lab, w, ans = self._drop_slots(self.relabelled(sl)[0], Wp[sl], drops, D)
            P_ = self.shape[1]
            for b0 in range(sl.start, sl.stop, self.step):
                b1 = min(sl.stop, b0 + self.step)
                cols = slice((b0 - sl.start) * P_, (b1 - sl.start) * P_)
                vote(slice(b0, b1), (lab[:, cols], w[:, cols], ans[b0 - sl.start: b1 - sl.start]))

        self.each_chunk(group, step=max(self.step, 4_000_000 // max(1, P * int(drops.sum()))))
        return out

    def _drop_slots(self, L: np.ndarray, W: np.ndarray, drops: np.ndarray, D: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every prefix k of every (order, problem), the drops[k] lowest-weight traces: their
        classes and weights as (sum(drops), b*P) arrays, and how many carry an answer (b, P, N).

        Each trace is packed into one int64 key (weight, position, class) so that the D lowest keys
        of the prefix are kept sorted by a compare-exchange chain (two ufunc calls per slot and
        step); equal weights: the earlier trace counts as lower.
        """
        b, P, N = L.shape
        R, C = b * P, self.C
        pos_bits, lab_bits = int(N).bit_length(), int(C + 1).bit_length()
        Lf = L.reshape(R, N).astype(np.int64) + 1  # 0 = no answer
        key = (W.reshape(R, N).astype(np.int64) << (pos_bits + lab_bits)) \
            | (np.arange(N, dtype=np.int64) << lab_bits) | Lf
        key = np.ascontiguousarray(key.T)  # (N, R): one contiguous row per step
        buf = np.full((D, R), np.iinfo(np.int64).max, dtype=np.int64)  # slot rows, ascending
        V = int(drops.sum())
        slots = np.empty((V, R), dtype=np.int64)  # after sample n, its drops[n] lowest keys
        lo = np.empty(R, dtype=np.int64)
        v = 0
        for j in range(N):
            x = key[j].copy()
            for i in range(D):  # insert x into the sorted buffer, pushing the largest out
                np.minimum(buf[i], x, out=lo)
                np.maximum(buf[i], x, out=x)
                buf[i] = lo
            d = int(drops[j])
            if d:
                slots[v: v + d] = buf[:d]
                v += d
        lab = ((slots & ((1 << lab_bits) - 1)) - 1).astype(np.int32)  # (V, R)
        w = (slots >> (pos_bits + lab_bits)).astype(W.dtype)
        offsets = np.concatenate(([0], np.cumsum(drops)[:-1]))
        answered = np.zeros((N, R), dtype=np.int64)
        answered[drops > 0] = np.add.reduceat((lab >= 0).view(np.int8), offsets[drops > 0], axis=0, dtype=np.int16)
        return lab, w, answered.T.reshape(b, P, N)

    def _subtract(self, tallies: np.ndarray, lab: np.ndarray, w: np.ndarray, drops: np.ndarray, D: int) -> None:
        """Remove the dropped traces' votes from ``tallies`` (b, P, N, C), in place.

        Slot i of every prefix goes in one fancy-index update: within one slot the cells
        (order, prefix, class) are distinct, so a plain ``-=`` is exact (no duplicate indices).
        """
        b, P, N, C = tallies.shape
        if not tallies.flags.c_contiguous:
            raise ValueError("tallies must be C-contiguous")
        offsets = np.concatenate(([0], np.cumsum(drops)[:-1]))
        flat = tallies.reshape(-1)
        row = np.arange(b * P, dtype=np.int64)[None, :] * (N * C)
        for i in range(D):
            ns = np.flatnonzero(drops > i)
            rows = offsets[ns] + i
            li = lab[rows]  # (len(ns), b * P)
            ok = li >= 0
            flat[(row + ns[:, None] * C + li)[ok]] -= w[rows][ok]

    def _best_of_n(self, scores: np.ndarray) -> np.ndarray:
        """The highest-scoring sample of each prefix (ties: the earliest).

        When no problem has tied finite scores, each sample is replaced by its rank within its
        problem (0 = no score), so the prefix winner is a running maximum of small integers and its
        correctness a table lookup; otherwise the running argmax is tracked explicitly.
        """
        B, P, N = self.shape
        S = np.where(np.isfinite(scores), scores, -np.inf)
        srt = np.sort(S, axis=1)
        fin = np.isfinite(srt)
        if not np.any((srt[:, 1:] == srt[:, :-1]) & fin[:, 1:]):
            rank = np.empty((P, N), dtype=self.small if N < 127 else np.int32)
            order = np.argsort(S, axis=1, kind="stable")
            n_nan = (~np.isfinite(S)).sum(axis=1)
            r = np.arange(N)[None, :] - n_nan[:, None] + 1  # finite scores ranked 1.. upward
            np.put_along_axis(rank, order, np.maximum(r, 0).astype(rank.dtype), axis=1)
            labels = self.pool.labels
            ok = self.cc[np.arange(P)[:, None], np.where(labels < 0, self.C, labels)]  # (P, N) per sample
            table = np.zeros((P, N + 1), dtype=bool)  # rank -> correct
            np.put_along_axis(table, rank.astype(np.intp), ok, axis=1)
            R = rank.ravel()[self.flat]
            top = np.maximum.accumulate(R, axis=2)
            first = ok.ravel()[self.flat[:, :, 0]]  # all unscored: the first sample
            hit = table.ravel()[(np.arange(P) * (N + 1))[None, :, None] + top]
            return np.where(top > 0, hit, first[:, :, None])
        Sp = S.ravel()[self.flat]
        run = np.maximum.accumulate(Sp, axis=2)
        record = np.ones((B, P, N), dtype=bool)
        record[:, :, 1:] = Sp[:, :, 1:] > run[:, :, :-1]  # strict: ties keep the earlier sample
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
            # breakpoints are looked up only for the traces that do stop (about 1 in 10)
            bi, pi, ji = np.nonzero(stopped)
            sample = self.flat[bi, pi, ji + W] - pi * N
            toks = self.pool.stop_tokens(sample[None, None, :], thr[bi, pi][None, None, :], per_item=pi)
            used_tok[bi, pi, ji + W] = toks[0, 0]
        Wi = fixed_weights(self.pool, name).ravel()[self.flat]
        seen = np.maximum.accumulate((self.L >= 0) & kept, axis=2)
        out = np.empty((B, P, N), dtype=bool)
        def chunk(sl: slice) -> None:
            Lr, orig = self._relabel(np.where(kept[sl], self.L[sl], -1).astype(self.L.dtype))
            tallies = np.cumsum((Lr[..., None] == self.arC) * Wi[sl][..., None], axis=2, dtype=Wi.dtype)
            out[sl] = self._correct_rel(np.where(seen[sl], tallies.argmax(axis=-1), -1), orig)

        self.each_chunk(chunk)
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

