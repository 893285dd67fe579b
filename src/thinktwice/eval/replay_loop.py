"""A plain-Python replay of the curve strategies, one order and one problem at a time.

The readable reference for :mod:`thinktwice.eval.curves`: tests check the vectorised replay
against it, and ``bench/curves.py`` times it as the baseline. Same rules, same tie-breaking (exact
integer tallies, as ``strategies/voting.py``), the live strategies' own stopping functions, no
numpy in the inner loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from thinktwice.eval.curves import CurveSpec, _weights
from thinktwice.eval.pool_data import PoolData
from thinktwice.strategies.adaptive import beta_stop_probability, min_batch_to_stop
from thinktwice.strategies.deepconf import linear_percentile
from thinktwice.strategies.voting import exact_units

__all__ = ["leader_ahead_prob", "replay_loop", "replay_one", "replay_prefixes", "spec_weights"]

Row = tuple[bool, int, float, float]


def leader_ahead_prob(v1: int, v2: int) -> float:
    """Beta-posterior P(leader ahead) = P(Binomial(v1 + v2 + 1, 1/2) <= v1), exactly."""
    n = v1 + v2 + 1
    return sum(math.comb(n, j) for j in range(v1 + 1)) / 2**n


def spec_weights(pool: PoolData, spec: CurveSpec) -> np.ndarray | None:
    """The (P, N) scores ``spec`` votes or selects with (NaN: none), read once per pool (None: none)."""
    if spec.kind in ("weighted-sc", "deepconf", "deepconf-online"):
        return _weights(pool, spec.score_name or "")
    if spec.kind == "best-of-n":
        return np.asarray(pool.score(spec.signal or ""), dtype=np.float64)
    return None


def _winner(tally: dict[int, int], first: dict[int, int]) -> int:
    """The class with the largest tally, ties to the earliest ``first``; -1 when none."""
    best, best_t = -1, -1
    for c, t in tally.items():
        if t > best_t or (t == best_t and first[c] < first[best]):
            best, best_t = c, t
    return best


def _vote(labels: Sequence[int], units: Sequence[int], voters: Sequence[int]) -> tuple[int, dict[int, int]]:
    """Exact weighted vote among the positions ``voters`` (in order); (winner, tallies)."""
    tally: dict[int, int] = {}
    first: dict[int, int] = {}
    for j in voters:
        if labels[j] >= 0:
            first.setdefault(labels[j], j)
            tally[labels[j]] = tally.get(labels[j], 0) + units[j]
    return _winner(tally, first), tally


def replay_one(pool: PoolData, spec: CurveSpec, p: int, order: Sequence[int],
               weights: np.ndarray | None = None, *, native_n: bool = False) -> list[Row]:
    """For one problem and one order: (correct, samples used, calls, generated tokens) for caps k = 1..N.

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
    s = [float(weights[p, i]) for i in order] if weights is not None else []
    units = exact_units([x if math.isfinite(x) else 0.0 for x in s]) if spec.kind != "best-of-n" else []
    per_call = spec.per_call

    def ok(c: int) -> bool:
        return c >= 0 and cc[c]

    def calls_of(n: int) -> float:
        return float(math.ceil(n / per_call) if native_n else n)

    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    sc: list[int] = []  # the majority after each prefix
    top2: list[tuple[int, int]] = []
    for j, lab in enumerate(labels):
        if lab >= 0:
            counts[lab] = counts.get(lab, 0) + 1
            first.setdefault(lab, j)
        sc.append(_winner(counts, first))
        top = sorted(counts.values(), reverse=True) + [0, 0]
        top2.append((top[0], top[1]))

    def counts_at(d: int) -> tuple[int, int]:
        return top2[d - 1] if d else (0, 0)

    out: list[Row] = []
    if spec.kind in ("sc", "greedy"):
        out = [(ok(sc[k - 1]), k, calls_of(k), cum[k]) for k in range(1, N + 1)]
        return [(out[0][0], 1, 1.0, cum[1])] if spec.kind == "greedy" else out
    if spec.kind == "adaptive-consistency":
        # the live rounds: each asks for the fewest samples that could stop (a cap k truncates the
        # round that would pass it); rounds end where the rule can fire, so one uncapped schedule
        # serves every cap
        ends, stop = [0], N + 1
        while ends[-1] < N and stop > N:
            d = ends[-1] + min_batch_to_stop(*counts_at(ends[-1]), spec.threshold, N - ends[-1])
            ends.append(d)
            v1, v2 = counts_at(d)
            if v1 > 0 and beta_stop_probability(v1, v2) >= spec.threshold:
                stop = d
        for k in range(1, N + 1):
            used = min(stop, k)
            prev = max(e for e in ends if e < used)
            calls = sum(calls_of(b - a) for a, b in zip(ends, ends[1:]) if b <= prev) + calls_of(used - prev)
            out.append((ok(sc[used - 1]), used, calls, cum[used]))
        return out
    if spec.kind == "esc":
        w = spec.window
        stop = next((e for e in range(w, N + 1, w) if len(set(labels[e - w:e])) == 1 and labels[e - 1] >= 0), N + 1)
        for k in range(1, N + 1):
            used = min(stop, k)  # windows of w, the last one cut by the cap; one call each with native n
            out.append((ok(sc[used - 1]), used, float(math.ceil(used / w)) if native_n else float(used), cum[used]))
        return out
    if spec.kind == "weighted-sc":
        tally: dict[int, int] = {}
        positive = False
        for k in range(1, N + 1):
            lab = labels[k - 1]
            if lab >= 0:
                tally[lab] = tally.get(lab, 0) + units[k - 1]
                positive = positive or units[k - 1] > 0
            win = _winner(tally, first) if positive else sc[k - 1]
            out.append((ok(win), k, calls_of(k), cum[k]))
        return out
    if spec.kind == "best-of-n":
        best = -1
        for k in range(1, N + 1):
            j = k - 1
            if labels[j] >= 0 and not math.isnan(s[j]) and (best < 0 or s[j] > s[best]):
                best = j
            out.append((ok(labels[best] if best >= 0 else sc[j]), k, calls_of(k), cum[k]))
        return out
    if spec.kind == "deepconf":
        for k in range(1, N + 1):
            scored = [j for j in range(k) if labels[j] >= 0 and math.isfinite(s[j])]
            if not scored:
                out.append((ok(sc[k - 1]), k, calls_of(k), cum[k]))
                continue
            cutoff = linear_percentile([s[j] for j in scored], (1 - spec.keep) * 100)
            win, _ = _vote(labels, units, [j for j in scored if s[j] >= cutoff])
            out.append((ok(win), k, calls_of(k), cum[k]))
        return out
    if spec.kind == "deepconf-online":
        return [_online(pool, spec, p, order, labels, s, units, cum, sc, k, native_n) for k in range(1, N + 1)]
    raise ValueError(f"no reference replay for {spec.kind!r}")


def _online(pool: PoolData, spec: CurveSpec, p: int, order: Sequence[int], labels: list[int], s: list[float],
            units: list[int], cum: list[float], sc: list[int], k: int, native_n: bool) -> Row:
    """DeepConf online with cap ``k``, step by step as ``strategies/deepconf.DeepConfOnline``."""
    cc = [bool(x) for x in pool.class_correct[p]]

    def ok(c: int) -> bool:
        return c >= 0 and cc[c]

    W = min(spec.warmup, k)
    calls = 1.0 if native_n else float(W)
    finite = [s[j] for j in range(W) if math.isfinite(s[j])]
    if not finite:
        return ok(sc[W - 1]), W, calls, cum[W]
    thr = linear_percentile(finite, 100.0 - spec.percentile)
    kept = [j for j in range(W) if math.isfinite(s[j]) and s[j] >= thr]
    spent = cum[W]
    d = W
    num, den = float(spec.consensus).as_integer_ratio()
    while d < k:
        win, tally = _vote(labels, units, kept)
        total = sum(tally.values())
        if win >= 0 and total > 0 and tally[win] * den >= num * total:
            break
        m = min(spec.per_call, k - d)
        for j in range(d, d + m):
            if math.isfinite(s[j]) and s[j] >= thr:
                kept.append(j)
                spent += cum[j + 1] - cum[j]
            elif math.isfinite(s[j]):  # below the threshold: stopped at the first window under it
                assert pool.dc_values is not None and pool.dc_tokens is not None
                r = 0
                while pool.dc_values[p, order[j], r] >= thr:
                    r += 1
                spent += float(pool.dc_tokens[p, order[j], r])
            else:
                spent += cum[j + 1] - cum[j]
        calls += 1.0 if native_n else float(m)
        d += m
    win, _ = _vote(labels, units, kept)
    return ok(win if win >= 0 else sc[W - 1]), d, calls, spent


def replay_prefixes(pool: PoolData, spec: CurveSpec, p: int, order: Sequence[int],
                    weights: np.ndarray | None = None, *, native_n: bool = False) -> list[Row]:
    """The plainest loop: for each budget k, replay the strategy afresh on the first k samples
    (what running the strategy once per k would do); same results as :func:`replay_one`."""
    if weights is None:
        weights = spec_weights(pool, spec)
    ks = 1 if spec.kind == "greedy" else len(order)
    return [replay_one(pool, spec, p, order[:k], weights, native_n=native_n)[-1] for k in range(1, ks + 1)]


def replay_loop(pool: PoolData, spec: CurveSpec, orders: np.ndarray, *, native_n: bool = False
                ) -> tuple[np.ndarray, ...]:
    """:func:`replay_one` over every order and problem: (correct, used, calls, tokens), each (B, P, K)."""
    B, P, _ = orders.shape
    w = spec_weights(pool, spec)
    rows = [[replay_one(pool, spec, p, orders[b, p].tolist(), w, native_n=native_n) for p in range(P)]
            for b in range(B)]
    arr = np.array(rows, dtype=object)  # (B, P, K, 4)
    return tuple(np.asarray(arr[..., i].tolist(), dtype=float) for i in range(4))
