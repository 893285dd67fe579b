"""The vectorised pool replay: hand-computed points, the plain-loop reference, and live strategies."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from thinktwice.errors import ConfigError
from thinktwice.eval.curves import (
    CurveSpec,
    beta_stop_table,
    parse_specs,
    pass_at_k_points,
    permutations,
    replay,
    replay_detail,
)
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.replay_loop import leader_ahead_prob, replay_loop
from thinktwice.eval.store import StoredSample
from thinktwice.lm.pool import PoolBackend
from thinktwice.strategies.adaptive import AdaptiveConsistency, EarlyStoppingSC
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.tasks.base import Query
from thinktwice.types import Problem, Prompt, Sample, SamplingParams, Usage


class Numbers:
    """Answer format: the last integer in the text; equivalence by value."""

    def extract(self, text: str) -> str | None:
        m = re.findall(r"-?\d+", text)
        return m[-1] if m else None

    def canonical(self, answer: str) -> str:
        return str(int(answer))

    def equivalent(self, a: str, b: str) -> bool:
        return int(a) == int(b)


FMT = Numbers()


def _stored(pid: str, texts: list[str], tokens: list[int], gold: str) -> list[StoredSample]:
    out = []
    for i, (t, n) in enumerate(zip(texts, tokens)):
        a = FMT.extract(t)
        s = Sample(text=t, usage=Usage(calls=1, prompt_tokens=10, completion_tokens=n))
        out.append(StoredSample(pid, i, "sample", s, a, a is not None and int(a) == int(gold)))
    return out


# A 3-problem x 4-sample pool whose curves are worked out by hand below.
HAND = {
    "a": (["x 1", "x 2", "x 2", "x 1"], [10, 20, 30, 40], "1"),
    "b": (["x 5", "none", "x 5", "x 6"], [1, 2, 3, 4], "6"),
    "c": (["x 7", "x 7", "x 7", "x 7"], [5, 5, 5, 5], "7"),
}


def _hand_pool() -> PoolData:
    rows = {pid: _stored(pid, t, n, g) for pid, (t, n, g) in HAND.items()}
    return PoolData.from_samples(list(HAND), rows, FMT)


def test_hand_computed_sc_points_for_two_orders() -> None:
    pool = _hand_pool()
    # order 0: identity; order 1: reversed
    orders = np.array([[[0, 1, 2, 3]] * 3, [[3, 2, 1, 0]] * 3])
    correct, _, _, tokens = replay_detail(pool, CurveSpec("sc"), orders)
    # problem a, identity: 1 | 1,2 tie -> 1 (first) | 1,2,2 -> 2 | 2-2 tie -> 1 (first)
    assert correct[0, 0].tolist() == [True, True, False, True]
    # problem a, reversed (1,2,2,1): 1 | tie -> 1 | 2 | tie -> 1 (appeared first)
    assert correct[1, 0].tolist() == [True, True, False, True]
    # problem b (gold 6), identity (5, -, 5, 6): wrong until the end (5 leads 2-1)
    assert correct[0, 1].tolist() == [False, False, False, False]
    # problem b reversed (6, 5, -, 5): 6 | tie 6-5 -> 6 | 6 | 5 leads 2-1
    assert correct[1, 1].tolist() == [True, True, True, False]
    assert correct[:, 2].all()
    sc = replay(pool, [CurveSpec("sc")], orders=orders, n_boot=50)[0]
    # per k: problem a gives 1+1, 1+1, 0+0, 1+1; b gives 0+1, 0+1, 0+1, 0+0; c gives 2 each; 6 (order, problem)s
    assert np.allclose(sc.accuracy, np.array([2 + 1 + 2, 2 + 1 + 2, 0 + 1 + 2, 2 + 0 + 2]) / 6)
    # tokens: mean over problems and orders of the first-k sums
    assert tokens[0, 0].tolist() == [10, 30, 60, 100] and tokens[1, 0].tolist() == [40, 70, 90, 100]
    assert np.allclose(sc.tokens, [(10 + 40 + 1 + 4 + 5 + 5) / 6, (30 + 70 + 3 + 7 + 10 + 10) / 6,
                                   (60 + 90 + 6 + 9 + 15 + 15) / 6, (100 + 100 + 10 + 10 + 20 + 20) / 6])
    assert np.allclose(sc.calls, [1, 2, 3, 4]) and np.allclose(sc.prompt_tokens, [10, 20, 30, 40])


def test_hand_computed_adaptive_esc_and_pass_at_k() -> None:
    pool = _hand_pool()
    orders = np.array([[[0, 1, 2, 3]] * 3])
    # adaptive: problem c is unanimous; P(4 vs 0) = 0.96875 >= 0.95 stops at 4, P(3, 0) = 0.9375 does not
    _, used, _, tokens = replay_detail(pool, CurveSpec("adaptive-consistency"), orders)
    assert used[0, 2].tolist() == [1, 2, 3, 4] and tokens[0, 2, 3] == 20
    _, used, _, _ = replay_detail(pool, CurveSpec("adaptive-consistency", threshold=0.9), orders)
    assert used[0, 2].tolist() == [1, 2, 3, 3]  # P(3, 0) = 0.9375 >= 0.9
    # esc with windows of 2: c stops after its first window; a's first window (1, 2) disagrees, second (2, 1) too
    _, used, calls, _ = replay_detail(pool, CurveSpec("esc", window=2), orders, native_n=True)
    assert used[0, 2].tolist() == [1, 2, 2, 2] and calls[0, 2].tolist() == [1, 1, 1, 1]
    assert used[0, 0].tolist() == [1, 2, 3, 4] and calls[0, 0].tolist() == [1, 1, 2, 2]
    # b's first window is (5, no answer): a window with a missing answer never agrees
    assert used[0, 1].tolist() == [1, 2, 3, 4]
    # pass@k: a has 2/4 correct, b 1/4, c 4/4. pass@1 = (0.5 + 0.25 + 1) / 3; pass@2 = (5/6 + 1/2 + 1) / 3
    pk = pass_at_k_points(pool, n_boot=20)
    assert math.isclose(pk.accuracy[0], (0.5 + 0.25 + 1) / 3)
    assert math.isclose(pk.accuracy[1], (5 / 6 + 0.5 + 1) / 3)
    assert math.isclose(pk.accuracy[3], 1.0)


def test_beta_table_matches_exact_rule() -> None:
    t = beta_stop_table(12)
    for v1 in range(13):
        for v2 in range(13):
            assert math.isclose(t[v1, v2], leader_ahead_prob(v1, v2), rel_tol=1e-9)
    assert math.isclose(t[4, 0], 0.96875)


@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_equals_plain_loop_for_every_strategy(ties: bool) -> None:
    pool = PoolData.synthetic(12, 20, seed=5)
    if ties:  # coarse scores make equal weights and equal tallies common
        scores = {k: np.round(v) for k, v in pool.scores.items()}
        scores["self-certainty"][0, :6] = np.nan
        pool = dataclasses.replace(pool, scores=scores)
    specs = parse_specs("greedy,sc,weighted-sc:self-certainty,best-of-n:path-prob,adaptive-consistency,"
                        "esc,deepconf,deepconf-online")
    specs += [CurveSpec("deepconf-online", warmup=4, percentile=50, batch=3),
              CurveSpec("deepconf", keep=0.5), CurveSpec("adaptive-consistency", batch=2)]
    orders = permutations(12, 20, 4, seed=9)
    for spec in specs:
        for native_n in (False, True):
            fast = replay_detail(pool, spec, orders, native_n=native_n)
            slow = replay_loop(pool, spec, orders, native_n=native_n)
            for name, a, b in zip(("correct", "used", "calls", "tokens"), fast, slow):
                assert np.asarray(a, float).shape == b.shape, (spec.label, name)
                assert np.allclose(np.asarray(a, float), b), (spec.label, name, native_n)


def test_deepconf_online_truncates_stopped_traces() -> None:
    pool = PoolData.synthetic(30, 24, seed=2)
    orders = permutations(30, 24, 3, seed=1)
    _, _, _, online = replay_detail(pool, CurveSpec("deepconf-online", warmup=8), orders)
    _, _, _, full = replay_detail(pool, CurveSpec("sc"), orders)
    assert np.all(online[:, :, :8] == full[:, :, :8])  # warm-up traces are generated whole
    assert np.all(online <= full + 1e-9) and np.any(online[:, :, -1] < full[:, :, -1])


def _live_pool(n_problems: int = 6, n: int = 12, seed: int = 0) -> tuple[dict[str, list[StoredSample]], dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows, golds = {}, {}
    for p in range(n_problems):
        pid = f"q{p}"
        gold = str(int(rng.integers(1, 4)))
        answers = rng.choice(["1", "2", "3", "none"], size=n, p=[0.45, 0.25, 0.2, 0.1])
        texts = [f"reasoning ... {a}" if a != "none" else "no idea" for a in answers]
        toks = rng.integers(5, 60, size=n).tolist()
        rows[pid], golds[pid] = _stored(pid, texts, toks, gold), gold
    return rows, golds


@pytest.mark.parametrize("make,spec,ks", [
    (lambda k: SelfConsistency(n=k, batch=16), CurveSpec("sc"), [1, 2, 3, 5, 8, 12]),
    (lambda k: AdaptiveConsistency(max_samples=k), CurveSpec("adaptive-consistency"), [1, 3, 4, 7, 12]),
    (lambda k: EarlyStoppingSC(max_samples=k), CurveSpec("esc"), [5, 7, 10, 12]),
])
async def test_replay_equals_live_strategy_through_pool_backend(make, spec, ks) -> None:  # type: ignore[no-untyped-def]
    rows, golds = _live_pool()
    ids = list(rows)
    pool = PoolData.from_samples(ids, rows, FMT)
    seeds = [0, 1, 2]
    samples = {pid: [r.sample for r in rows[pid]] for pid in ids}
    # the PoolBackend's seeded order is the permutation the vectorised replay must use
    orders = np.array([[list(PoolBackend(samples[pid], seed=s).order) for pid in ids] for s in seeds])
    correct, used, _, tokens = replay_detail(pool, spec, orders)
    for k in ks:
        strategy = make(k)
        for b, s in enumerate(seeds):
            for p, pid in enumerate(ids):
                query = Query(Problem(pid, "q", golds[pid]), Prompt.user("q"), FMT, SamplingParams())
                d = await strategy.run(query, PoolBackend(samples[pid], seed=s), seed=7)
                live_ok = d.answer is not None and int(d.answer) == int(golds[pid])
                assert live_ok == bool(correct[b, p, k - 1]), (spec.label, k, s, pid)
                assert len(d.candidates) == used[b, p, k - 1]
                assert d.usage.completion_tokens == tokens[b, p, k - 1]


def test_specs_and_pool_errors() -> None:
    with pytest.raises(ConfigError, match="needs a signal"):
        parse_specs("weighted-sc")
    with pytest.raises(ConfigError, match="unknown curve strategy"):
        parse_specs("sc,nonsense")
    pool = _hand_pool()
    with pytest.raises(ConfigError, match="no scores for signal"):
        replay(pool, parse_specs("best-of-n:self-certainty"), n_perm=2, n_boot=10)
    with pytest.raises(ConfigError, match="orders must have shape"):
        replay_detail(pool, CurveSpec("sc"), np.zeros((2, 3, 5), dtype=int))


def test_replay_is_seeded_and_bands_contain_the_mean() -> None:
    pool = PoolData.synthetic(40, 16, seed=3)
    specs = parse_specs("sc,esc")
    a = replay(pool, specs, n_perm=20, seed=4, n_boot=200)
    b = replay(pool, specs, n_perm=20, seed=4, n_boot=200)
    for x, y in zip(a, b):
        assert np.array_equal(x.accuracy, y.accuracy) and np.array_equal(x.lo, y.lo)
        assert np.all(x.lo <= x.accuracy + 1e-12) and np.all(x.accuracy <= x.hi + 1e-12)
    # esc never uses more samples than the cap and stops early somewhere
    esc = a[1]
    assert np.all(esc.samples <= esc.ks) and esc.samples[-1] < esc.ks[-1]


def test_incremental_reference_equals_replaying_each_budget_afresh() -> None:
    from thinktwice.eval.replay_loop import replay_one, replay_prefixes, spec_weights

    pool = PoolData.synthetic(6, 16, seed=8)
    orders = permutations(6, 16, 2, seed=4)
    for spec in parse_specs("greedy,sc,weighted-sc:self-certainty,best-of-n:path-prob,adaptive-consistency,esc,"
                            "deepconf,deepconf-online"):
        w = spec_weights(pool, spec)
        for b in range(2):
            for p in range(6):
                order = orders[b, p].tolist()
                assert replay_one(pool, spec, p, order, w) == replay_prefixes(pool, spec, p, order, w), spec.label


def test_deepconf_online_window_longer_than_every_trace_is_noted() -> None:
    from thinktwice.lm.scripted import synthetic_stat

    rows = {}
    for p in range(3):
        out = []
        for i in range(6):
            words = [" a", " b", " c", " ####", f" {i % 2}"]
            toks = tuple(synthetic_stat(w, 0.5 + 0.08 * j, 50, 4) for j, w in enumerate(words))
            s = Sample("".join(words), toks, usage=Usage(calls=1, prompt_tokens=10, completion_tokens=len(words)))
            out.append(StoredSample(f"p{p}", i, "sample", s, str(i % 2), i % 2 == 0))
        rows[f"p{p}"] = out
    spec = CurveSpec("deepconf-online", warmup=2)
    long = PoolData.from_samples(list(rows), rows, FMT, window=64)  # every trace is 5 tokens
    (curve,) = replay(long, [spec], n_perm=3, n_boot=10)
    assert len(curve.notes) == 1 and "no trace is cut" in curve.notes[0] and curve.to_dict()["notes"] == list(curve.notes)
    short = PoolData.from_samples(list(rows), rows, FMT, window=2)
    assert replay(short, [spec], n_perm=3, n_boot=10)[0].notes == ()
    assert replay(long, [CurveSpec("sc")], n_perm=3, n_boot=10)[0].notes == ()
