"""Accuracy-vs-compute curves replayed from a stored sample pool, vectorised over permutations.

For every strategy and every budget k = 1..N, each problem's N stored samples are served in B
seeded random orders (the same orders for every strategy: common random numbers); the strategy
decides as the live strategy with cap (or n) k would on that order, and the curve reports
accuracy, generated tokens, calls and prompt tokens averaged over problems and orders, with
two-level bootstrap bands (METHODS §1.3). One pass over j = 0..N-1 updates all B x P (order,
problem) states at once, so a 1319 x 64 x 200 study replays in seconds.

Each spec is the named live strategy of ``strategies/`` with its defaults (``batch`` is the live
strategy's per-call cap: 16, or 8 for deepconf-online):

- ``greedy``: one sample; a pool drawn at temperature > 0 holds no greedy sample, so this is the
  first sample of each order (SC@1) shown as a single point.
- ``sc`` (``self-consistency``, arXiv 2203.11171): majority over answer classes, ties to the class
  that appeared first.
- ``weighted-sc:<signal>`` (``weighted-vote``): the same vote weighted by the non-negative scores;
  with no positive weight among the answers, the plain majority.
- ``best-of-n:<signal>``: the highest-scoring sample with an answer and a score (ties: the
  earliest); none: the plain majority.
- ``adaptive-consistency`` (arXiv 2305.11860): stop when the Beta posterior P(leader ahead) >= 0.95,
  drawn in the live strategy's rounds (each round the fewest samples that could stop); k is the cap.
- ``esc`` (arXiv 2401.10480): windows of 5; stop after a full window of one answer; k is the cap.
- ``deepconf`` (``deepconf-offline``, arXiv 2508.15260): among the answered traces keep those at
  or above the ``100 (1 - keep)``-th percentile of their DeepConf score and vote weighted by it.
- ``deepconf-online``: warm-up of 16 traces (k < 16: all k); threshold = their
  ``(100 - percentile)``-th percentile of lowest-group confidence; warm-up traces below it weigh
  0; a later trace stops at the first window whose mean falls below it (its tokens up to there
  are counted, it casts no vote); before each batch the run stops once the leader holds
  ``consensus`` (0.95) of the vote weight.

Calls: with ``native_n`` a request for n samples is one call (at most ``batch`` each), else every
sample is one call; prompt tokens = calls x the problem's prompt length. Weighted votes are
decided exactly, as ``strategies/voting.py`` decides them: float32 tallies settle every point
whose leader is clear by more than their rounding bound, and the rest (ties, near-ties) are
summed as integers on one grid (:func:`exact_limbs`). DeepConf online cuts only traces longer
than the pool's group window; when none is, the curve's ``notes`` say so.

What is proven: ``tests/eval/test_replay_vs_live.py`` runs every spec above live, over
``lm/pool.PoolBackend`` serving the same orders, on random pools (sizes, answer spreads with
no-answer and empty traces, distinct / tied / flat confidences, NaN and zero scores, traces at
``max_tokens``, windows shorter and longer than the traces, caps below and above DeepConf's
warm-up) and checks the same answer, samples, calls, prompt and generated tokens at every k, with
and without native n. The replay assumes the strategy samples with the pool's own ``max_tokens``.
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
from thinktwice.strategies.adaptive import beta_stop_probability
from thinktwice.strategies.deepconf import percentile_position

__all__ = [
    "Curve",
    "CurveSpec",
    "PoolData",
    "beta_stop_table",
    "exact_limbs",
    "parse_specs",
    "pass_at_k_points",
    "permutations",
    "replay",
    "replay_detail",
    "replay_notes",
    "summarize",
    "table_ks",
]

_ALIASES = {"self-consistency": "sc", "maj": "sc", "majority": "sc", "weighted-vote": "weighted-sc",
            "bon": "best-of-n", "adaptive": "adaptive-consistency", "ac": "adaptive-consistency",
            "deepconf-offline": "deepconf"}
_KINDS = ("greedy", "sc", "weighted-sc", "best-of-n", "adaptive-consistency", "esc", "deepconf",
          "deepconf-online", "pass@k")
_DEEPCONF_SCORES = ("deepconf-lowest", "deepconf-mean", "deepconf-tail", "deepconf-bottom10")


@dataclass(frozen=True, slots=True)
class CurveSpec:
    """One replayed strategy and its settings (the live strategy's defaults).

    ``signal`` names the per-sample score for weighted-sc / best-of-n / deepconf (a DeepConf
    score for the deepconf kinds); ``threshold`` is adaptive-consistency's stopping probability;
    ``window`` ESC's window; ``keep`` DeepConf's kept fraction (offline, the strategy's ``eta``);
    ``warmup``, ``percentile`` and ``consensus`` DeepConf-online's warm-up size, confidence
    percentile (90 keeps about 90% of later traces) and vote-share stop; ``batch`` the samples per
    call on a native-n backend (None: the live default, 16, or 8 for deepconf-online).
    """

    kind: str
    signal: str | None = None
    threshold: float = 0.95
    window: int = 5
    keep: float = 0.9
    warmup: int = 16
    percentile: float = 90.0
    consensus: float = 0.95
    batch: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown curve strategy {self.kind!r}; choose from {', '.join(_KINDS)}")
        if self.kind in ("weighted-sc", "best-of-n") and not self.signal:
            raise ConfigError(f"{self.kind} needs a signal, e.g. '{self.kind}:self-certainty'")
        if self.kind in ("deepconf", "deepconf-online") and self.score_name not in _DEEPCONF_SCORES:
            raise ConfigError(f"{self.kind} votes by a DeepConf score ({', '.join(_DEEPCONF_SCORES)}), got "
                              f"{self.signal!r}; weight a vote by another signal with weighted-sc:SIGNAL")
        if self.kind == "deepconf-online" and self.score_name != "deepconf-lowest":
            raise ConfigError("deepconf-online stops and votes by the lowest group confidence (deepconf-lowest)")
        if not 0.5 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0.5, 1), got {self.threshold}")
        if self.window < 1 or self.warmup < 1:
            raise ConfigError("window and warmup must be >= 1")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep must be in (0, 1], got {self.keep}")
        if not 0 <= self.percentile <= 100:
            raise ConfigError(f"percentile must be in [0, 100], got {self.percentile}")
        if not 0.5 < self.consensus <= 1:
            raise ConfigError(f"consensus must be in (0.5, 1], got {self.consensus}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.signal}" if self.signal else self.kind

    @property
    def score_name(self) -> str | None:
        """The pool score this strategy reads (None when it reads none)."""
        if self.kind in ("deepconf", "deepconf-online"):
            return self.signal or "deepconf-lowest"
        return self.signal

    @property
    def per_call(self) -> int:
        """Samples per call on a native-n backend (the live strategy's ``batch``)."""
        return self.batch if self.batch is not None else (8 if self.kind == "deepconf-online" else 16)


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
    paired differences); ``samples`` is the mean number of samples actually used; ``notes`` are
    caveats a report should print next to the curve (e.g. a DeepConf window that never cuts).
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
    notes: tuple[str, ...] = ()

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
                "samples": self.samples.tolist(), "notes": list(self.notes)}


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
    """The (P, N) float scores of signal ``name`` as vote weights, as the live weighted vote makes them
    (``strategies/scoring.weights_from_scores``): a problem whose scores are all >= 0 keeps them; one
    with a negative score reads them as log-scale, ``exp(s - max s)`` (mean logprobs become path
    probabilities up to a common factor, which no vote can tell apart). NaN stays NaN (no score),
    -inf is no score either; +inf is refused."""
    s = np.array(pool.score(name), dtype=np.float64)
    if np.any(np.isposinf(s)):
        raise ConfigError(f"signal {name!r} has infinite scores, which cannot weigh a replayed vote")
    s[np.isneginf(s)] = np.nan
    with np.errstate(invalid="ignore"):
        neg = np.any(s < 0, axis=1)
    if neg.any():
        rows = s[neg]
        # math.exp, as the live rule: numpy's exp rounds some arguments (e.g. -5.55e-17) to the other
        # neighbour, and exact tallies would then tell apart weights the live vote sees as equal
        s[neg] = _EXP(rows - np.nanmax(rows, axis=1, keepdims=True))
    return s


_EXP = np.vectorize(lambda x: math.exp(x) if math.isfinite(x) else math.nan, otypes=[np.float64])


def exact_limbs(w: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Non-negative floats ``w`` as exact integers on one grid, split into limbs of ``S`` bits.

    Returns ``(limbs, S)`` with ``limbs`` (L, *w.shape) int64 such that
    ``w == sum_l limbs[l] * 2**(S*l)`` times one common power of two (the smallest last bit among
    the nonzero weights). ``S = 62 - bit_length(n + 1)``, so sums of ``n`` limbs and their carries
    fit int64. NaN counts as 0.
    """
    S = 62 - int(n + 1).bit_length()
    w = np.where(np.isfinite(w), w, 0.0)
    mant, ex = np.frexp(w)
    m = (mant * 2.0**53).astype(np.int64)  # exact: the 53-bit integer mantissa
    e = ex.astype(np.int64) - 53
    nz = m != 0
    if not nz.any():
        return np.zeros((1, *w.shape), dtype=np.int64), S
    shift = np.where(nz, e - e[nz].min(), 0)  # w / 2**e_min == m << shift
    n_limbs = -(-int((shift + 53).max()) // S)
    mask = np.int64((1 << S) - 1)
    out = np.zeros((n_limbs, *w.shape), dtype=np.int64)
    for i in range(n_limbs):
        off = S * i - shift  # the bit of m that lands on this limb's bit 0
        right = np.right_shift(m, np.clip(off, 0, 63))
        low_bits = np.clip(S + off, 0, 62)  # bits of m that land in this limb when off < 0
        left = np.left_shift(m & ((np.int64(1) << low_bits) - 1), np.clip(-off, 0, 62))
        out[i] = np.where(off >= 0, right, left) & mask
    return out, S


def _float32(w: np.ndarray) -> np.ndarray:
    """Weights (NaN: 0) scaled by their maximum to float32, for approximate tallies that floats can
    hold whatever the scores' magnitude (ratios are all a vote compares)."""
    w = np.where(np.isfinite(w), w, 0.0)
    top = float(w.max()) if w.size else 0.0
    return (w / top if top > 0 else w).astype(np.float32)


def _carry(t: list[np.ndarray], S: int) -> None:
    """Normalise limb sums in place: every limb but the top one in [0, 2**S)."""
    for i in range(len(t) - 1):
        c = t[i] >> S
        t[i] -= c << S
        t[i + 1] += c


def _lex_max(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first index of the lexicographic maximum along the last axis (``keys`` most significant
    first), and the mask of every index attaining it."""
    cand = np.ones(keys[0].shape, dtype=bool)
    for k in keys:
        lowest = np.iinfo(k.dtype).min if k.dtype.kind == "i" else -np.inf
        kk = np.where(cand, k, lowest)
        cand &= kk == kk.max(axis=-1, keepdims=True)
    return cand.argmax(axis=-1), cand


def _as_int(limbs: Sequence[int], S: int) -> int:
    return sum(int(x) << (S * i) for i, x in enumerate(limbs))


def _percentile_table(n: int, pct: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every count m <= n: the ranks and weight of numpy's linear percentile ``pct`` of m values."""
    lo, hi, g = np.zeros(n + 1, dtype=np.intp), np.zeros(n + 1, dtype=np.intp), np.zeros(n + 1)
    for m in range(1, n + 1):
        lo[m], hi[m], g[m] = percentile_position(m, pct)
    return lo, hi, g


def _threshold(values_sorted: np.ndarray, m: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray]
               ) -> np.ndarray:
    """Per row, the percentile (``table``: :func:`_percentile_table`) of the first ``m`` values of
    each ascending row of ``values_sorted`` (..., R), as
    :func:`thinktwice.strategies.deepconf.linear_percentile` computes it; NaN where m == 0."""
    lo, hi, g = table
    a = np.take_along_axis(values_sorted, lo[m][..., None], axis=-1)[..., 0]
    b = np.take_along_axis(values_sorted, hi[m][..., None], axis=-1)[..., 0]
    t = g[m]
    with np.errstate(invalid="ignore"):
        d = b - a
        out = np.where(t >= 0.5, b - d * (1 - t), a + d * t)
    return np.where(m > 0, out, np.nan)

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
    """Replay ``specs`` over ``pool`` and return one Curve per spec.

    ``orders`` (B, P, N) overrides the seeded permutations (e.g. to match a live replay).
    ``native_n`` says the backend returns n samples per call (the pool run records it); otherwise
    every sample is its own call. Prompt tokens = calls x the problem's prompt length. ``workers``
    threads share the chunks of orders (default: the CPU count, at most 8).
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
            used.mean(axis=(0, 1)), correct if keep_correct else None, replay_notes(pool, spec),
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


def replay_notes(pool: PoolData, spec: CurveSpec) -> tuple[str, ...]:
    """Caveats of replaying ``spec`` on ``pool``: for deepconf-online, whether any stored trace is
    long enough to be cut mid-way (a trace shorter than the group window never is)."""
    if spec.kind != "deepconf-online" or pool.dc_values is None or pool.dc_tokens is None:
        return ()
    early = np.isfinite(pool.dc_values) & (pool.dc_tokens < pool.completion_tokens[:, :, None])
    share = float(early.any(axis=2).mean())
    if share == 0:
        return ("deepconf-online: no stored trace is longer than the group window, so no trace is cut "
                "mid-way; its savings come only from the consensus stop (rebuild the pool with a "
                "smaller --window to replay the cut)",)
    if share < 0.5:
        return (f"deepconf-online: only {share:.0%} of the stored traces are longer than the group window; "
                "the others can never be cut mid-way",)
    return ()


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


def _leader_needed(n: int, threshold: float) -> np.ndarray:
    """Per runner-up count v2 <= n, the least leader count v1 at which the live
    adaptive-consistency rule fires (``beta_stop_probability(v1, v2) >= threshold``), computed
    with the live function itself so that the replay stops where the strategy stops."""
    out = np.empty(n + 1, dtype=np.int64)
    v1 = 1
    for v2 in range(n + 1):  # P grows with v1 and falls with v2: the least v1 only grows
        while beta_stop_probability(v1, v2) < threshold:
            v1 += 1
        out[v2] = v1
    return out


class _Engine:
    """Permuted views of the pool, processed in chunks of orders so the (b, P, N, C) work fits in cache.

    Every vote is computed for all prefixes at once: one-hot answers (b, P, N, C) are cumulated
    along the order axis, giving each class's count / weight after every sample; the winner is the
    largest tally, ties going to the class that appeared first (classes are renumbered by first
    appearance, so numpy's first-maximum rule is the tie rule).
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

    def permuted(self, values: np.ndarray, sl: slice = slice(None)) -> np.ndarray:
        return np.asarray(values).ravel()[self.flat[sl]]

    def correct_of(self, win: np.ndarray) -> np.ndarray:
        P = self.shape[1]
        return self.cc[np.arange(P)[None, :, None], np.where(win < 0, self.C, win)]

    def _relabel(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Renumber each order's classes by first appearance, so that np.argmax's first-maximum
        rule *is* the tie rule (earliest class wins). Returns the renumbered labels (b, P, N) and,
        per new id, the original class (b, P, C; C = none)."""
        N, C = L.shape[2], self.C
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

    def _calls(self, used: np.ndarray, per_call: int) -> np.ndarray:
        """Calls for ``used`` samples asked at once: split at ``per_call`` with native n, else one each."""
        return -(-used // per_call) if self.native_n else used

    # -- majority vote, shared by sc / adaptive / esc and every fallback ---------------------------
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

    # -- weighted votes: float tallies, decided exactly where floats cannot tell ------------------
    def _class_tallies(self, L: np.ndarray, wp: np.ndarray) -> np.ndarray:
        """Float32 weighted tallies after every prefix, class-major: (C, b, P, N) for labels ``L``
        (b, P, N; -1: no vote) and weights ``wp`` (class-major keeps every pass contiguous)."""
        tf = np.empty((self.C, *L.shape), dtype=np.float32)
        for c in range(self.C):
            np.cumsum((L == c) * wp, axis=-1, out=tf[c])
        return tf

    @staticmethod
    def _float_winner(tf: np.ndarray, total: np.ndarray, terms: int) -> tuple[np.ndarray, np.ndarray]:
        """The largest class-major float32 tally (ties: the first class), and where it might not be
        the exact one.

        Each tally is a sum (and difference) of at most ``terms`` non-negative weights rounded to
        float32, so it is within ``(terms + 1) * 2**-23`` of the prefix's ``total`` weight (or any
        larger bound) of the exact value; the leader is certain when no other class comes within
        twice that (ties always fall inside).
        """
        top = tf[0].copy()
        second = np.full(top.shape, -np.inf, dtype=np.float32)
        win = np.zeros(top.shape, dtype=np.intp)
        for c in range(1, tf.shape[0]):
            x = tf[c]
            np.maximum(second, np.minimum(x, top), out=second)
            np.copyto(win, c, where=x > top)
            np.maximum(top, x, out=top)
        return win, top - second <= (2 * terms + 8) * 2.0**-23 * total

    def _exact_winner(self, lab: np.ndarray, contrib: np.ndarray, rows: Sequence[np.ndarray], S: int
                      ) -> np.ndarray:
        """Exact weighted votes of M points: ``lab`` (M, N) classes, ``contrib`` (M, N) which
        positions vote, ``rows`` their weight limbs (M, N) each. The largest exact tally wins;
        ties go to the class whose first voting position is earliest; classes without a voter lose."""
        N = lab.shape[1]
        out = np.empty(lab.shape[0], dtype=np.intp)
        for c0 in range(0, lab.shape[0], 20_000):
            c1 = c0 + 20_000
            oh = (lab[c0:c1, :, None] == self.arC) & contrib[c0:c1, :, None]
            t = [(oh * r[c0:c1, :, None]).sum(axis=1) for r in rows]
            _carry(t, S)
            present = oh.any(axis=1)
            first = np.where(present, oh.argmax(axis=1), N)
            out[c0:c1] = _lex_max([*t[::-1], present, -first])[0]
        return out

    def _settle(self, win: np.ndarray, amb: np.ndarray, lab: np.ndarray, contrib: Callable[..., np.ndarray],
                limbs: np.ndarray, S: int, sl: slice) -> None:
        """Replace ``win`` (b, P, N) by the exact winner where ``amb``; ``contrib(bi, pi, ji, rows)``
        gives the voting positions of those points (rows: their labels (M, N))."""
        bi, pi, ji = np.nonzero(amb)
        if not bi.size:
            return
        rows = lab[bi, pi]
        idx = self.flat[sl][bi, pi]
        win[bi, pi, ji] = self._exact_winner(rows, contrib(bi, pi, ji, rows),
                                             [lb.ravel()[idx] for lb in limbs], S)

    # -- per-strategy replays ---------------------------------------------------------------------
    def run(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(correct, samples used, calls, generated tokens), each (B, P, K)."""
        B, P, N = self.shape
        kind = spec.kind
        if kind == "adaptive-consistency":
            return self._adaptive(spec)
        if kind == "esc":
            return self._esc(spec)
        if kind == "deepconf-online":
            return self._deepconf_online(spec)
        if kind in ("sc", "greedy"):
            correct = self.majority()[0]
        elif kind == "weighted-sc":
            correct = self._weighted(_weights(self.pool, spec.signal or ""))
        elif kind == "deepconf":
            correct = self._deepconf_offline(_weights(self.pool, spec.score_name or ""), spec.keep)
        elif kind == "best-of-n":
            correct = self._best_of_n(self.pool.score(spec.signal or ""))
        else:
            raise ConfigError(f"{kind!r} is not replayable as a curve")
        used = np.broadcast_to(np.arange(1, N + 1, dtype=np.int64), (B, P, N))
        calls = self._calls(used, spec.per_call)
        tokens = self.cumtok[:, :, 1:]
        if kind == "greedy":
            return correct[:, :, :1], used[:, :, :1], np.ones((B, P, 1), dtype=np.int64), tokens[:, :, :1]
        return correct, used, calls, tokens

    def _stopped(self, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples used, correctness and tokens at every cap k for a run that stops by itself after
        ``stop`` samples (B, P; N + 1: never): it then answers the majority of what it drew."""
        B, P, N = self.shape
        sc = self.majority()[0]
        ks = np.arange(1, N + 1, dtype=np.int16 if N < 2**15 else np.int64)
        before = ks[None, None, :] < stop[:, :, None]  # (B, P, K): still sampling at cap k
        at = (np.minimum(stop, N) - 1)[:, :, None]
        used = np.where(before, ks, (at + 1).astype(ks.dtype))
        correct = np.where(before, sc, np.take_along_axis(sc, at, axis=2))
        tokens = np.where(before, self.cumtok[:, :, 1:], np.take_along_axis(self.cumtok, at + 1, axis=2))
        return used, correct, tokens

    def _adaptive(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        B, P, N = self.shape
        self.want_counts = True
        _, v1, v2 = self.majority()
        need = _leader_needed(N, spec.threshold)
        fire = v1 >= need[v2]
        stop = np.where(fire.any(axis=2), fire.argmax(axis=2) + 1, N + 1)
        used, correct, tokens = self._stopped(stop)
        if not self.native_n:
            return correct, used, used, tokens
        # native n: the live strategy asks, each round, for the fewest samples that could stop
        # (min_batch_to_stop), in calls of at most ``batch``; rounds end where the rule can fire
        ends = np.zeros((B, P, N + 1), dtype=bool)
        ends[:, :, 0] = True
        d = np.zeros((B, P), dtype=np.int64)
        until = np.minimum(stop, N)
        active = d < until
        bi, pi = np.meshgrid(np.arange(B), np.arange(P), indexing="ij")
        while active.any():
            at = np.maximum(d - 1, 0)[:, :, None]
            a1 = np.where(d > 0, np.take_along_axis(v1, at, axis=2)[:, :, 0], 0).astype(np.int64)
            a2 = np.where(d > 0, np.take_along_axis(v2, at, axis=2)[:, :, 0], 0).astype(np.int64)
            nd = d + np.maximum(need[a2] - a1, 1)
            active &= nd < until
            ends[bi[active], pi[active], nd[active]] = True
            d = np.where(active, nd, d)
        pos = np.arange(N + 1)
        last = np.maximum.accumulate(np.where(ends, pos, 0), axis=2)  # the latest round end <= position
        size = pos[1:] - last[:, :, :-1]  # a round ending at e started at the latest end before e
        round_calls = np.where(ends[:, :, 1:], -(-size // spec.per_call), 0)
        cum = np.concatenate([np.zeros((B, P, 1), dtype=np.int64), np.cumsum(round_calls, axis=2)], axis=2)
        u = used.astype(np.int64)
        prev = np.take_along_axis(last, u - 1, axis=2)  # the latest round end before the stop or cap
        calls = np.take_along_axis(cum, prev, axis=2) + -(-(u - prev) // spec.per_call)
        return correct, used, calls, tokens

    def _esc(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        used, correct, tokens = self._stopped(self._esc_stop(spec.window))
        calls = -(-used // spec.window) if self.native_n else used  # one call of n = window per window
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

    def _weighted(self, w: np.ndarray) -> np.ndarray:
        """Weighted vote over each prefix (every answered sample votes; a NaN score weighs 0); the
        majority where no answered sample of the prefix has a positive weight."""
        N = self.shape[2]
        limbs, S = exact_limbs(w, N)
        wv = np.where(np.isfinite(w), w, 0.0)
        sc = self.majority()[0]
        positive = np.maximum.accumulate((self.L >= 0) & self.permuted(wv > 0), axis=2)
        out = np.empty(self.shape, dtype=bool)
        at = np.arange(N)

        w32 = _float32(w)

        def chunk(sl: slice) -> None:
            Lr, orig = self.relabelled(sl)
            wp = self.permuted(w32, sl)
            tf = self._class_tallies(Lr, wp)
            win, amb = self._float_winner(tf, np.cumsum(wp, axis=2), N)  # the total of all samples: a looser bound
            self._settle(win, amb & positive[sl], Lr,
                         lambda bi, pi, ji, rows: (rows >= 0) & (at[None, :] <= ji[:, None]), limbs, S, sl)
            out[sl] = self._correct_rel(win, orig)

        self.each_chunk(chunk)
        return np.where(positive, out, sc)

    def _best_of_n(self, scores: np.ndarray) -> np.ndarray:
        """The highest-scoring sample with an answer and a score in each prefix (ties: the
        earliest); the majority where there is none.

        When no problem has tied scores among those samples, each is replaced by its rank (0: not
        eligible), so the prefix winner is a running maximum of small integers and its correctness
        a table lookup; otherwise the running argmax is tracked explicitly.
        """
        B, P, N = self.shape
        sc = self.majority()[0]
        S = np.asarray(scores, dtype=np.float64)
        labels = self.pool.labels
        valid = (labels >= 0) & ~np.isnan(S)
        key = np.where(valid, S, np.nan)
        srt = np.sort(key, axis=1)  # NaN (not eligible) last
        if not np.any(srt[:, 1:] == srt[:, :-1]):
            rank = np.zeros((P, N), dtype=self.small if N < 127 else np.int32)
            np.put_along_axis(rank, np.argsort(key, axis=1), np.arange(1, N + 1, dtype=rank.dtype), axis=1)
            rank[~valid] = 0
            ok = self.cc[np.arange(P)[:, None], np.where(labels < 0, self.C, labels)]
            table = np.zeros((P, N + 1), dtype=bool)  # rank -> is that sample correct
            np.put_along_axis(table, rank.astype(np.intp), ok, axis=1)
            table[:, 0] = False
            top = np.maximum.accumulate(rank.ravel()[self.flat], axis=2)
            hit = table.ravel()[(np.arange(P) * (N + 1))[None, :, None] + top]
            return np.where(top > 0, hit, sc)
        out = np.empty(self.shape, dtype=bool)
        idx = np.arange(N)

        def chunk(sl: slice) -> None:
            s = self.permuted(S, sl)
            ok = (self.L[sl] >= 0) & ~np.isnan(s)
            k = np.where(ok, s, -np.inf)
            best = np.maximum.accumulate(k, axis=2)
            before = np.concatenate([np.full(k.shape[:2] + (1,), -np.inf), best[:, :, :-1]], axis=2)
            seen = np.concatenate([np.zeros(k.shape[:2] + (1,), bool),
                                   np.maximum.accumulate(ok, axis=2)[:, :, :-1]], axis=2)
            record = ok & (~seen | (k > before))  # strict: ties keep the earlier sample
            chosen = np.maximum.accumulate(np.where(record, idx, -1), axis=2)
            lab = np.take_along_axis(self.L[sl], np.maximum(chosen, 0), axis=2).astype(np.int64)
            got = self.cc[np.arange(P)[None, :, None], np.where(lab < 0, self.C, lab)]
            out[sl] = np.where(chosen >= 0, got, sc[sl])

        self.each_chunk(chunk)
        return out

    def _deepconf_offline(self, w: np.ndarray, keep: float) -> np.ndarray:
        """DeepConf offline over each prefix: among answered traces with a score, those at or above
        the ``100 (1 - keep)``-th percentile of their scores vote, weighted by the score; ties go
        to the class whose first *kept* trace came first; the majority where no answered trace
        has a score.

        The percentile needs each prefix's few lowest scores: a sorted buffer of them is carried
        along the order (a compare-exchange chain, one wide ufunc call per slot and step) for many
        orders at once; the traces below the threshold are then subtracted from the prefix tallies.
        """
        B, P, N = self.shape
        table = _percentile_table(N, (1 - keep) * 100)
        D = int(table[1].max()) + 1  # buffer slots: the highest rank a percentile reads, plus one
        limbs, S = exact_limbs(w, N)
        w32 = _float32(w)
        sc = self.majority()[0]
        scored = (self.L >= 0) & self.permuted(np.isfinite(w))
        m_all = np.cumsum(scored, axis=2, dtype=np.int16 if N < 2**15 else np.int32)
        out = np.empty((B, P, N), dtype=bool)

        # rank of each score within its problem (ties share a rank, unscored rank last): comparing
        # ranks is comparing scores, and a rank and an order position pack into one integer key
        fin = np.isfinite(w)
        rank = np.where(fin, np.argsort(np.argsort(np.where(fin, w, np.inf), axis=1, kind="stable"), axis=1), N)
        srt = np.sort(np.where(fin, w, np.inf), axis=1)
        first = np.array([np.searchsorted(srt[p], srt[p]) for p in range(P)])  # a tie's lowest rank
        rank = np.where(fin, np.take_along_axis(first, rank.clip(0, N - 1), axis=1), N)
        bits = int(N).bit_length()
        kdt = np.int32 if (N + 1) << bits < 2**31 else np.int64
        full, mask = np.iinfo(kdt).max, kdt((1 << bits) - 1)

        def group(gs: slice) -> None:
            vals = np.where(scored[gs], self.permuted(w, gs), np.inf)
            R = vals.shape[0] * P
            Vf = vals.reshape(R, N)
            key = (np.where(scored[gs], self.permuted(rank, gs), N).astype(kdt) << bits) | np.arange(N, dtype=kdt)
            key = np.ascontiguousarray(key.reshape(R, N).T)  # (N, R): one contiguous row per step
            m = np.ascontiguousarray(m_all[gs].reshape(R, N).T).astype(np.intp)  # (N, R), like key
            buf = np.full((D, R), full, dtype=kdt)  # the D lowest keys so far, ascending
            snap = np.empty((N, D, R), dtype=kdt)  # the buffer after every prefix
            tmp = np.empty(R, dtype=kdt)
            for j in range(N):
                x = key[j].copy()
                for i in range(min(D, j + 1)):  # insert x, pushing the largest out
                    np.minimum(buf[i], x, out=tmp)
                    np.maximum(buf[i], x, out=x)
                    buf[i] = tmp
                snap[j] = buf
            lo_t, hi_t, g_t = table
            klo = np.take_along_axis(snap, lo_t[m][:, None, :], axis=1)[:, 0]  # (N, R)
            khi = np.take_along_axis(snap, hi_t[m][:, None, :], axis=1)[:, 0]
            rows = np.arange(R)[None, :]
            a, b = Vf[rows, klo & mask], Vf[rows, khi & mask]
            t = g_t[m]
            with np.errstate(invalid="ignore"):
                d_ = b - a
                thr = np.where(m > 0, np.where(t >= 0.5, b - d_ * (1 - t), a + d_ * t), np.nan)  # (N, R)
                # the traces below thr: every slot up to lo when thr is above the lo-th score, else
                # those ranked strictly below it (equal scores share a rank)
                n_drop = np.where(thr > a, lo_t[m] + 1, 0)
                ji, ri = np.nonzero((m > 0) & ~(thr > a))
            if ji.size:
                n_drop[ji, ri] = ((snap[ji, :, ri] >> bits) < (klo[ji, ri] >> bits)[:, None]).sum(axis=1)
            n_drop = n_drop.astype(np.int16)
            for b0 in range(gs.start, gs.stop, self.step):
                b1 = min(gs.stop, b0 + self.step)
                cols = slice((b0 - gs.start) * P, (b1 - gs.start) * P)
                sub = slice(b0 - gs.start, b1 - gs.start)
                self._offline_chunk(slice(b0, b1), (snap[:, :, cols], n_drop[:, cols], mask), thr[:, cols],
                                    vals[sub], w32, limbs, S, scored, m_all, out)

        self.each_chunk(group, step=max(self.step, 8_000_000 // max(1, P * N * D)))
        return np.where(m_all > 0, out, sc)

    def _offline_chunk(self, sl: slice, dropped: tuple[np.ndarray, np.ndarray, np.integer], thr: np.ndarray,
                       vals: np.ndarray, w32: np.ndarray,
                       limbs: np.ndarray, S: int, scored: np.ndarray, m_all: np.ndarray, out: np.ndarray) -> None:
        """The prefix tallies of one chunk of orders minus the dropped traces, and the winner.

        From the buffer pass: ``dropped`` = (the buffer's keys after every prefix (N, D, b*P), how
        many of its slots fall below the threshold (N, b*P), the key's position mask), and ``thr``
        (N, b*P).
        """
        Lr, orig = self.relabelled(sl)
        Lv = np.where(scored[sl], Lr, -1)
        b, P, N = Lv.shape
        wp = self.permuted(w32, sl)  # a trace without a score has none of the tallies' classes
        tf = self._class_tallies(Lv, wp)
        Wf, Lf = wp.reshape(b * P, N), Lv.reshape(b * P, N)
        flat_t = tf.reshape(-1)
        snap, n_drop, mask = dropped
        for i in range(snap.shape[1]):  # one slot of every prefix at once: its cells are distinct
            j, r = np.nonzero(n_drop > i)  # the lowest n_drop slots of each prefix are below the threshold
            if not j.size:
                break
            p_ = (snap[j, i, r] & mask).astype(np.intp)
            flat_t[Lf[r, p_].astype(np.intp) * (b * P * N) + r * N + j] -= Wf[r, p_]
        win, amb = self._float_winner(tf, np.cumsum(wp, axis=2), N + snap.shape[1])
        at = np.arange(N)

        def kept(bi: np.ndarray, pi: np.ndarray, ji: np.ndarray, rows: np.ndarray) -> np.ndarray:
            return (rows >= 0) & (vals[bi, pi] >= thr[ji, bi * P + pi][:, None]) & (at[None, :] <= ji[:, None])

        self._settle(win, amb & (m_all[sl] > 0), Lv, kept, limbs, S, sl)
        out[sl] = self._correct_rel(win, orig)

    def _deepconf_online(self, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """DeepConf online at every cap k, as ``strategies/deepconf.DeepConfOnline`` runs it.

        k below the warm-up: a warm-up of k traces and nothing else. From the warm-up on: its
        threshold, kept traces voting by their lowest-group confidence, later traces below the
        threshold cut where the pool's breakpoints say, and the consensus check before each batch.
        """
        B, P, N = self.shape
        w = _weights(self.pool, spec.score_name or "deepconf-lowest")
        limbs, S = exact_limbs(w, N)
        sc = self.majority()[0]
        W, pc = spec.warmup, spec.per_call
        table = _percentile_table(min(W, N), 100.0 - spec.percentile)
        num, den = float(spec.consensus).as_integer_ratio()
        correct = np.empty((B, P, N), dtype=bool)
        used = np.empty((B, P, N), dtype=np.int64)
        tokens = np.empty((B, P, N), dtype=np.float64)
        at = np.arange(N)

        def threshold(conf: np.ndarray) -> np.ndarray:  # the percentile of the finite confidences
            fin = np.isfinite(conf)
            return _threshold(np.sort(np.where(fin, conf, np.inf), axis=2), fin.sum(axis=2), table)

        def upto(bi: np.ndarray, pi: np.ndarray, ji: np.ndarray, rows: np.ndarray) -> np.ndarray:
            return (rows >= 0) & (at[None, :] <= ji[:, None])

        w32 = _float32(w)

        def chunk(sl: slice) -> None:
            conf = self.permuted(w, sl)
            c32 = self.permuted(w32, sl)
            L = self.L[sl]
            for k in range(1, min(W, N + 1)):  # caps below the warm-up: the whole run is a warm-up of k
                thr = threshold(conf[:, :, :k])
                with np.errstate(invalid="ignore"):
                    voter = np.isfinite(conf[:, :, :k]) & (conf[:, :, :k] >= thr[:, :, None])
                Lv = np.where(voter, L[:, :, :k], -1)
                wp = np.where(voter, c32[:, :, :k], 0.0)
                tf = np.stack([((Lv == c) * wp).sum(axis=2) for c in range(self.C)])  # (C, b, P)
                win, amb = self._float_winner(tf, wp.sum(axis=2), k)
                has = (Lv >= 0).any(axis=2)
                bi, pi = np.nonzero(amb & has)
                if bi.size:  # ties and near-ties: the exact vote of those (order, problem)s
                    rows = Lv[bi, pi]
                    idx = self.flat[sl][bi, pi, :k]
                    win[bi, pi] = self._exact_winner(rows, rows >= 0, [lb.ravel()[idx] for lb in limbs], S)
                correct[sl, :, k - 1] = np.where(has, self.correct_of(win[:, :, None])[:, :, 0], sc[sl][:, :, k - 1])
                used[sl, :, k - 1] = k
                tokens[sl, :, k - 1] = self.cumtok[sl][:, :, k]
            if W > N:
                return
            b = conf.shape[0]
            thr = threshold(conf[:, :, :W])  # NaN: no warm-up trace has a confidence
            with np.errstate(invalid="ignore"):
                voter = np.isfinite(conf) & (conf >= thr[:, :, None])
                below = np.isfinite(conf) & (conf < thr[:, :, None])
            below[:, :, :W] = False  # warm-up traces run to the end
            tok = self.tok[sl].astype(np.float64)
            bi, pi, ji = np.nonzero(below)
            if bi.size:  # a later trace below the threshold stops at its first window under it
                sample = self.flat[sl][bi, pi, ji] - pi * N
                tok[bi, pi, ji] = self.pool.stop_tokens(sample[None, None, :], thr[bi, pi][None, None, :],
                                                        per_item=pi)[0, 0]
            cum = np.concatenate([np.zeros((b, P, 1)), np.cumsum(tok, axis=2)], axis=2)
            Lv = np.where(voter, L, -1)
            wp = np.where(Lv >= 0, c32, 0.0)
            tf = self._class_tallies(Lv, wp)
            total = np.cumsum(wp, axis=2, dtype=np.float64)
            answered = np.maximum.accumulate(Lv >= 0, axis=2)
            win, amb = self._float_winner(tf, total, N)
            self._settle(win, amb & answered, Lv, upto, limbs, S, sl)
            lead = np.take_along_axis(tf, win[None], axis=0)[0]
            # the consensus check before each batch: after W, W + batch, ... samples (below the cap)
            stop = np.full((b, P), N + 1, dtype=np.int64)
            stop[np.isnan(thr)] = W  # no threshold: the warm-up's plain vote, nothing more
            margin = (4 * N + 16) * 2.0**-23  # float32 tallies: closer shares are decided exactly
            for c in range(W, N, pc):
                j = c - 1
                live = answered[:, :, j] & (total[:, :, j] > 0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    share = lead[:, :, j] / total[:, :, j]
                ok = live & (share >= spec.consensus * (1 + margin))
                for x, y in zip(*np.nonzero(live & (np.abs(share - spec.consensus) <= spec.consensus * margin))):
                    ok[x, y] = self._share_exact(Lv[x, y, :c], win[x, y, j], self.flat[sl][x, y, :c], limbs, S,
                                                 num, den)
                stop[(stop > N) & ok] = c
            u = np.minimum(stop[:, :, None], np.arange(W, N + 1)[None, None, :])  # caps k = W..N
            voted = self.correct_of(np.take_along_axis(win, u - 1, axis=2))
            has = np.take_along_axis(answered, u - 1, axis=2)
            correct[sl, :, W - 1:] = np.where(has, voted, sc[sl][:, :, W - 1:W])  # else the warm-up's majority
            used[sl, :, W - 1:] = u
            tokens[sl, :, W - 1:] = np.take_along_axis(cum, u, axis=2)

        self.each_chunk(chunk)
        if self.native_n:  # the warm-up in one call, then one call per batch
            calls = np.where(used <= W, 1, 1 + -(-(used - W) // pc))
        else:
            calls = used
        return correct, used, calls, tokens

    @staticmethod
    def _share_exact(lab: np.ndarray, leader: int, idx: np.ndarray, limbs: np.ndarray, S: int, num: int,
                     den: int) -> bool:
        """Whether class ``leader`` holds at least num/den of the weight of the voters in ``lab``."""
        rows = [lb.ravel()[idx] for lb in limbs]
        lead = _as_int([int(r[lab == leader].sum()) for r in rows], S)
        total = _as_int([int(r[lab >= 0].sum()) for r in rows], S)
        return total > 0 and lead * den >= num * total

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
