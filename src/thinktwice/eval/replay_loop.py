"""A plain-Python replay of the curve strategies, one order and one problem at a time.

The readable reference for :mod:`thinktwice.eval.curves`: tests check the vectorised replay
against it, and ``bench/curves.py`` times it as the baseline. Same rules, same tie-breaking, no
numpy in the inner loop.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from thinktwice.eval.curves import CurveSpec, _weights, fixed_weights
from thinktwice.eval.pool_data import PoolData

__all__ = ["leader_ahead_prob", "replay_loop", "replay_one"]


def leader_ahead_prob(v1: int, v2: int) -> float:
    """Beta-posterior P(leader ahead) = P(Binomial(v1 + v2 + 1, 1/2) <= v1), exactly."""
    n = v1 + v2 + 1
    return sum(math.comb(n, j) for j in range(v1 + 1)) / 2**n


def _winner(tally: dict[int, float], first: dict[int, int]) -> int:
    best, best_t = -1, -math.inf
    for c, t in tally.items():
        if t > best_t or (t == best_t and first[c] < first[best]):
            best, best_t = c, t
    return best


def spec_weights(pool: PoolData, spec: CurveSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The (float, fixed-point) weights ``spec`` votes with, computed once per pool (None: none)."""
    if spec.kind not in ("weighted-sc", "deepconf", "deepconf-online"):
        return None
    name = spec.score_name or ""
    return _weights(pool, name), fixed_weights(pool, name)


def replay_one(pool: PoolData, spec: CurveSpec, p: int, order: Sequence[int],
               weights: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[bool, int, float, float]]:
    """For one problem and one order: (correct, samples used, calls, generated tokens) for k = 1..N.

    ``weights`` is :func:`spec_weights` (computed here when not given).
    """
    if weights is None:
        weights = spec_weights(pool, spec)
    labels = [int(pool.labels[p, i]) for i in order]
    toks = [float(pool.completion_tokens[p, i]) for i in order]
    cc = [bool(x) for x in pool.class_correct[p]]
    N = len(order)
    cum = [0.0]
    for t in toks:
        cum.append(cum[-1] + t)

    def ok(c: int) -> bool:
        return c >= 0 and cc[c]

    if spec.kind in ("sc", "greedy", "adaptive-consistency", "esc"):
        sc, counts, first = [], {}, {}  # type: ignore[var-annotated]
        stop = N + 1
        for j, lab in enumerate(labels):
            if lab >= 0:
                counts[lab] = counts.get(lab, 0) + 1
                first.setdefault(lab, j)
            sc.append(_winner(counts, first))
            if spec.kind == "adaptive-consistency" and stop > N:
                top = sorted(counts.values(), reverse=True) + [0, 0]
                if leader_ahead_prob(top[0], top[1]) >= spec.threshold:
                    stop = j + 1
            if spec.kind == "esc" and stop > N and (j + 1) % spec.window == 0:
                win = labels[j + 1 - spec.window: j + 1]
                if len(set(win)) == 1 and win[0] >= 0:
                    stop = j + 1
        out = []
        for k in range(1, N + 1):
            used = min(stop, k) if spec.kind in ("adaptive-consistency", "esc") else k
            calls = float(math.ceil(used / spec.window)) if spec.kind == "esc" else float(used)
            out.append((ok(sc[used - 1]), used, calls, cum[used]))
        return out[:1] if spec.kind == "greedy" else out
    if spec.kind == "best-of-n":
        s = [float(pool.score(spec.signal or "")[p, i]) for i in order]
        s = [x if math.isfinite(x) else -math.inf for x in s]
        out, best, lab = [], -math.inf, -1
        for j in range(N):
            if j == 0 or s[j] > best:
                best, lab = s[j], labels[j]
            out.append((ok(lab), j + 1, float(j + 1), cum[j + 1]))
        return out
    if spec.kind in ("weighted-sc", "deepconf"):
        keep = 1.0 if spec.kind == "weighted-sc" else spec.keep
        assert weights is not None
        w = [int(x) for x in weights[1][p, list(order)]]
        tally: dict[int, int] = {}
        count: dict[int, int] = {}
        first: dict[int, int] = {}
        lowest: list[tuple[int, int, int]] = []  # the traces sorted by (weight, position)
        out = []
        for j in range(N):
            lab = labels[j]
            if lab >= 0:
                first.setdefault(lab, j)
                tally[lab] = tally.get(lab, 0) + w[j]
                count[lab] = count.get(lab, 0) + 1
            k = j + 1
            if keep < 1:
                bisect.insort(lowest, (w[j], j, lab))
            d = k - math.ceil(keep * k - 1e-9)  # drop the d lowest-weight traces
            if d == 0:
                out.append((ok(_winner(tally, first)), k, float(k), cum[k]))
                continue
            kept_t, kept_c = dict(tally), dict(count)
            for wd, _, ld in lowest[:d]:
                if ld >= 0:
                    kept_t[ld] -= wd
                    kept_c[ld] -= 1
            alive = {c: t for c, t in kept_t.items() if kept_c[c] > 0}
            out.append((ok(_winner(alive, first)), k, float(k), cum[k]))
        return out
    if spec.kind == "deepconf-online":
        assert weights is not None
        w = [float(x) for x in weights[0][p, list(order)]]
        wi = [int(x) for x in weights[1][p, list(order)]]
        W = min(spec.warmup, N)
        thr = float(np.percentile(w[:W], 100.0 - spec.percentile))
        tally, first = {}, {}
        out, spent = [], 0.0
        for j in range(N):
            kept = j < W or w[j] >= thr
            if kept:
                spent += toks[j]
                if labels[j] >= 0:
                    first.setdefault(labels[j], j)
                    tally[labels[j]] = tally.get(labels[j], 0) + wi[j]
            else:
                assert pool.dc_values is not None and pool.dc_tokens is not None
                i = order[j]
                r = 0
                while pool.dc_values[p, i, r] >= thr:
                    r += 1
                spent += float(pool.dc_tokens[p, i, r])
            out.append((ok(_winner(tally, first)), j + 1, float(j + 1), spent))
        return out
    raise ValueError(f"no reference replay for {spec.kind!r}")


def replay_prefixes(pool: PoolData, spec: CurveSpec, p: int, order: Sequence[int],
                    weights: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[bool, int, float, float]]:
    """The plainest loop: for each budget k, replay the strategy afresh on the first k samples
    (what running the strategy once per k would do); same results as :func:`replay_one`."""
    if weights is None:
        weights = spec_weights(pool, spec)
    ks = 1 if spec.kind == "greedy" else len(order)
    return [replay_one(pool, spec, p, order[:k], weights)[-1] for k in range(1, ks + 1)]


def replay_loop(pool: PoolData, spec: CurveSpec, orders: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`replay_one` over every order and problem: (correct, used, calls, tokens), each (B, P, K)."""
    B, P, _ = orders.shape
    w = spec_weights(pool, spec)
    rows = [[replay_one(pool, spec, p, orders[b, p].tolist(), w) for p in range(P)] for b in range(B)]
    arr = np.array(rows, dtype=object)  # (B, P, K, 4)
    return tuple(np.asarray(arr[..., i].tolist(), dtype=float) for i in range(4))
