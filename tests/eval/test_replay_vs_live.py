"""Differential test: every strategy the pool replay (eval/curves.py) shows equals the live strategy
run over a PoolBackend that serves the same order: answer correctness, samples used, calls, prompt
and generated tokens, at every cap k, with and without native n.

Random pools vary the size, the answer spread (with no-answer and empty samples), the confidence
pattern (distinct, templates mixed within traces, one template per trace, one flat value for every
token), a stored signal with NaN and zero scores, traces that end at max_tokens, bills that count
an end token the logprobs omit, and DeepConf windows shorter and longer than the traces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktwice.eval.curves import CurveSpec, exact_limbs, replay_detail
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.store import StoredSample
from thinktwice.lm.pool import PoolBackend
from thinktwice.signals.confidence import DeepConfLowest
from thinktwice.strategies.adaptive import AdaptiveConsistency, EarlyStoppingSC
from thinktwice.strategies.base import BaseStrategy
from thinktwice.strategies.deepconf import DeepConfOffline, DeepConfOnline
from thinktwice.strategies.greedy import Greedy
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.strategies.weighted import BestOfN, WeightedVote
from thinktwice.tasks.base import Query
from thinktwice.types import Problem, Prompt, Sample, SamplingParams, TokenStat, Usage

PROMPT_TOKENS = 11
MAX_TOKENS = 9


class Hash:
    """Answers: the word after the last '####'; equal as integers."""

    def extract(self, text: str) -> str | None:
        m = re.findall(r"####\s*(\S+)", text)
        return m[-1] if m else None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()


FMT = Hash()


class Stored:
    """A stored score (e.g. P(True) saved with the pool), looked up by the sample's text."""

    name = "stored"
    requires: frozenset[str] = frozenset()

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    async def score(self, query: object, candidates: list, lm: object) -> list[float]:  # type: ignore[type-arg]
        return [self.table[c.sample.text] for c in candidates]


SPREADS = {  # answer -> probability (None: no answer, of which a share are empty traces)
    "one": {"7": 0.9, None: 0.1},
    "two": {"1": 0.45, "2": 0.45, None: 0.1},
    "many": {"1": 0.2, "2": 0.2, "3": 0.2, "4": 0.2, None: 0.2},
    "none": {"3": 0.15, "4": 0.15, None: 0.7},
    "empty": {"5": 0.2, "6": 0.1, None: 0.7},
}
EMPTY = {"empty": 0.9}  # share of the no-answer traces that are empty (default 0.15)
PATTERNS = ("distinct", "mixed", "ties", "flat")


def _stat(tok: str, vals: tuple[float, float, float]) -> TokenStat:
    lp = sorted(vals, reverse=True)
    return TokenStat(tok, lp[0], ((tok, lp[0]), ("alt", lp[1]), ("other", lp[2])), entropy=-lp[0],
                     self_certainty=1.0 + lp[2])


@dataclass
class World:
    """A random pool of a few problems with its live twin."""

    pool: PoolData
    samples: dict[str, list[Sample]]
    golds: dict[str, str]
    stored: dict[str, float]
    window: int


STORED = (math.nan, 0.0, 0.25, 0.5, 1.0)
EXTREME = (math.nan, 0.0, 1e-300, 5e-324, 1e300, 3e299, 1.0)  # far beyond float32's range both ways


def make_world(seed: int, n: int, spread: str, pattern: str, window: int, problems: int = 2,
               empties_first: bool = False, short_eos: bool = False, stored: tuple[float, ...] = STORED) -> World:
    """A random pool; ``empties_first`` moves each problem's empty traces to the front (served
    first without shuffling: a warm-up with no confidence at all). End tokens billed beyond the
    logprobs go on traces at least ``window`` long unless ``short_eos`` (see the xfail below)."""
    rng = np.random.default_rng(seed)
    answers, probs = zip(*SPREADS[spread].items())
    templates = [tuple(-rng.uniform(0.01, 3.0, size=3)) for _ in range(3)]
    flat = tuple(-rng.uniform(0.01, 3.0, size=3))
    rows, samples, golds, table, extra = {}, {}, {}, {}, {}  # type: ignore[var-annotated]
    for p in range(problems):
        pid = f"q{p}"
        golds[pid] = str(rng.choice(["1", "2", "7", "3"]))
        rows[pid], samples[pid] = [], []
        for i in range(n):
            a = answers[rng.choice(len(answers), p=probs)]
            if a is None and i > 0 and rng.random() < EMPTY.get(spread, 0.15):
                words: list[str] = []  # an empty trace: no tokens, no answer, no score
            else:
                length = int(rng.integers(3, MAX_TOKENS + 1))
                body = [f" q{p}x{i}"] + [" s"] * (length - 1)
                words = body[: length - 2] + [" ####", f" {a}"] if a is not None else body
            stats = []
            mine = templates[int(rng.choice(3, p=[0.45, 0.45, 0.1]))]  # "ties": one template per sample
            for j, w in enumerate(words):
                if pattern == "distinct":
                    vals = tuple(-rng.uniform(0.01, 3.0, size=3))
                elif pattern == "mixed":  # templates mixed within a trace: cut points vary
                    vals = templates[(i * 7 + j) % 2 if rng.random() < 0.7 else 2]
                elif pattern == "ties":
                    vals = mine
                else:
                    vals = flat
                stats.append(_stat(w, vals))  # type: ignore[arg-type]
            text = "".join(words)
            finish = "length" if len(words) == MAX_TOKENS else "stop"
            eos = int(finish == "stop" and bool(words) and (short_eos or len(words) >= window)
                      and rng.random() < 0.5)  # billed, not in the logprobs
            s = Sample(text, tuple(stats), finish_reason=finish,
                       usage=Usage(calls=1, prompt_tokens=PROMPT_TOKENS, completion_tokens=len(words) + eos))
            samples[pid].append(s)
        if empties_first:
            samples[pid].sort(key=lambda x: bool(x.tokens))
        for i, s in enumerate(samples[pid]):
            got = FMT.extract(s.text)
            rows[pid].append(StoredSample(pid, i, "sample", s, got, got == golds[pid]))
            v = table.setdefault(s.text, float(rng.choice([*stored, rng.uniform(0, 2)])))
            extra[(pid, i)] = {"stored": v}
    pool = PoolData.from_samples(list(rows), rows, FMT, extra_scores=extra, window=window)
    return World(pool, samples, golds, table, window)


Live = Callable[[int, World], BaseStrategy]
CASES: dict[str, tuple[CurveSpec, Live]] = {
    "greedy": (CurveSpec("greedy"), lambda k, w: Greedy()),
    "sc": (CurveSpec("sc"), lambda k, w: SelfConsistency(n=k)),
    "sc-batch3": (CurveSpec("sc", batch=3), lambda k, w: SelfConsistency(n=k, batch=3)),
    "weighted-path-prob": (CurveSpec("weighted-sc", "path-prob", batch=4),
                           lambda k, w: WeightedVote(signal="path-prob", n=k, batch=4)),
    "weighted-mean-logprob": (CurveSpec("weighted-sc", "mean-logprob"),  # negative: exp(s - max) per problem
                              lambda k, w: WeightedVote(signal="mean-logprob", n=k)),
    "weighted-stored": (CurveSpec("weighted-sc", "stored"), lambda k, w: WeightedVote(signal=Stored(w.stored), n=k)),
    "weighted-deepconf": (CurveSpec("weighted-sc", "deepconf-lowest"),
                          lambda k, w: WeightedVote(signal=DeepConfLowest(window=w.window), n=k)),
    "best-self-certainty": (CurveSpec("best-of-n", "self-certainty", batch=2),
                            lambda k, w: BestOfN(signal="self-certainty", n=k, batch=2)),
    "best-stored": (CurveSpec("best-of-n", "stored"), lambda k, w: BestOfN(signal=Stored(w.stored), n=k)),
    "adaptive": (CurveSpec("adaptive-consistency"), lambda k, w: AdaptiveConsistency(max_samples=k)),
    "adaptive-0.8-batch2": (CurveSpec("adaptive-consistency", threshold=0.8, batch=2),
                            lambda k, w: AdaptiveConsistency(threshold=0.8, max_samples=k, batch=2)),
    "esc": (CurveSpec("esc"), lambda k, w: EarlyStoppingSC(max_samples=k)),
    "esc-2": (CurveSpec("esc", window=2), lambda k, w: EarlyStoppingSC(window=2, max_samples=k)),
    "deepconf": (CurveSpec("deepconf", batch=4),
                 lambda k, w: DeepConfOffline(n=k, window=w.window, batch=4)),
    "deepconf-keep-half": (CurveSpec("deepconf", "deepconf-mean", keep=0.5),
                           lambda k, w: DeepConfOffline(n=k, score="mean", eta=0.5, window=w.window)),
    "deepconf-online": (CurveSpec("deepconf-online", warmup=4, batch=3),
                        lambda k, w: DeepConfOnline(warm_up=4, max_samples=k, window=w.window, batch=3)),
    "deepconf-online-16": (CurveSpec("deepconf-online", percentile=50, consensus=0.8),
                           lambda k, w: DeepConfOnline(max_samples=k, percentile=50, consensus=0.8,
                                                       window=w.window)),
}


def replay_winners(pool: PoolData, spec: CurveSpec, orders: np.ndarray, native_n: bool) -> tuple[np.ndarray, ...]:
    """The replay's answer class (-1: none) and its samples, calls and tokens, each (B, P, K): the
    winner is read off by making each class in turn the only correct one."""
    C = pool.class_correct.shape[1]
    _, used, calls, tokens = replay_detail(pool, spec, orders, native_n=native_n)
    winner = np.full(used.shape, -1)
    for c in range(C):
        only = np.zeros_like(pool.class_correct)
        only[:, c] = True
        hit = replay_detail(dataclasses.replace(pool, class_correct=only), spec, orders, native_n=native_n)[0]
        assert not (hit & (winner >= 0)).any()
        winner[hit] = c
    return winner, used, calls, tokens


async def check(world: World, spec: CurveSpec, make: Live, seeds: list[int], native_n: bool,
                shuffle: bool = True) -> None:
    ids = list(world.samples)
    orders = np.array([[list(PoolBackend(world.samples[pid], seed=s, shuffle=shuffle).order) for pid in ids]
                       for s in seeds])
    winner, used, calls, tokens = replay_winners(world.pool, spec, orders, native_n)
    for k in range(1, winner.shape[2] + 1):
        strategy = make(k, world)
        for b, s in enumerate(seeds):
            for p, pid in enumerate(ids):
                query = Query(Problem(pid, "q", world.golds[pid]), Prompt.user("q"), FMT,
                              SamplingParams(max_tokens=MAX_TOKENS))
                backend = PoolBackend(world.samples[pid], seed=s, native_n=native_n, shuffle=shuffle)
                d = await strategy.run(query, backend, seed=3)
                where = (spec.label, k, s, pid, native_n)
                live = world.pool.class_answers[p].index(d.answer) if d.answer is not None else -1
                assert live == winner[b, p, k - 1], where
                assert len(d.candidates) == used[b, p, k - 1], where
                assert d.usage.calls == calls[b, p, k - 1], where
                assert d.usage.prompt_tokens == calls[b, p, k - 1] * PROMPT_TOKENS, where
                assert d.usage.completion_tokens == tokens[b, p, k - 1], where


# a fixed design first: every answer spread meets every confidence pattern, sizes above and below
# DeepConf's warm-up, windows shorter and longer than the traces, both billing conventions
GRID = [(1000 + i, (6, 13, 18)[i % 3], sorted(SPREADS)[i % 5], PATTERNS[i // 5], (2, 3, 100)[(i // 2) % 3], i % 2 == 1)
        for i in range(20)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_equals_live_on_a_fixed_design(case: str) -> None:
    spec, make = CASES[case]
    for seed, n, spread, pattern, window, native_n in GRID:
        asyncio.run(check(make_world(seed, n, spread, pattern, window), spec, make, [0, 1], native_n))


@pytest.mark.parametrize("case", sorted(CASES))
@settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([13, 6, 18, 3, 1]),
       spread=st.sampled_from(sorted(SPREADS)), pattern=st.sampled_from(PATTERNS),
       window=st.sampled_from([2, 3, 100]), native_n=st.booleans())
def test_replay_equals_live_on_random_pools(case: str, seed: int, n: int, spread: str, pattern: str, window: int,
                                            native_n: bool) -> None:
    spec, make = CASES[case]
    asyncio.run(check(make_world(seed, n, spread, pattern, window), spec, make, [0, 1], native_n))


@pytest.mark.parametrize("case", ["deepconf-online", "deepconf-online-16", "deepconf", "weighted-deepconf"])
@pytest.mark.parametrize("native_n", [False, True])
def test_replay_equals_live_when_the_first_traces_are_empty(case: str, native_n: bool) -> None:
    # the warm-up has no confidence at all: the live strategy votes the warm-up plainly and stops
    spec, make = CASES[case]
    for seed in range(3):
        world = make_world(2000 + seed, 18, "empty", "distinct", 2, empties_first=True)
        assert all(not s.tokens for v in world.samples.values() for s in v[:4])
        asyncio.run(check(world, spec, make, [0], native_n, shuffle=False))


def test_short_traces_below_the_threshold_bill_their_stored_usage() -> None:
    """A trace shorter than the window is never cut live, so the replay bills its stored usage (which may
    count an end token its logprobs lack), not a stop at its last logprob token."""
    spec, make = CASES["deepconf-online"]
    for seed in range(4):
        world = make_world(3000 + seed, 13, "two", "distinct", 100, short_eos=True)
        asyncio.run(check(world, spec, make, [0, 1], False))


def test_tallies_are_exact_so_ties_are_ties() -> None:
    from thinktwice.strategies.voting import vote
    from thinktwice.types import Candidate

    # A = {x, x, y} and B = {x, y, x} weigh the same; summed in float, B comes out 2e-16 ahead
    x, y = 0.282, 0.756
    assert (x + y) + x > (x + x) + y
    cands = [Candidate(Sample(a), a) for a in ["A", "B", "A", "B", "A", "B"]]
    v = vote(cands, FMT, [x, x, x, y, y, x])
    assert v.answer == "A" and v.exact[0] == v.exact[1]
    # the replay sums the same weights as integers on one grid
    w = np.array([[x, y, 0.0, math.nan, 1e-300, 3.5e12]])
    limbs, S = exact_limbs(w, 64)
    e = min(math.frexp(v)[1] - 53 for v in w[0] if math.isfinite(v) and v)
    got = [sum(int(limbs[i, 0, j]) << (S * i) for i in range(limbs.shape[0])) for j in range(w.shape[1])]
    assert [float(Fraction(g, 2**-e)) for g in got] == [x, y, 0.0, 0.0, 1e-300, 3.5e12]
    assert all(0 <= int(v) < 2**S for v in limbs.ravel())


async def test_pool_backend_bills_as_the_backend_could() -> None:
    world = make_world(7, 6, "two", "distinct", 2)
    samples = world.samples["q0"]
    q = Prompt.user("q")
    native = await PoolBackend(samples, shuffle=False).sample(q, SamplingParams(max_tokens=MAX_TOKENS), n=3)
    single = await PoolBackend(samples, shuffle=False, native_n=False).sample(q, SamplingParams(max_tokens=MAX_TOKENS), n=3)
    assert [s.usage.calls for s in native] == [1, 0, 0] and [s.usage.calls for s in single] == [1, 1, 1]
    assert [s.usage.prompt_tokens for s in single] == [PROMPT_TOKENS] * 3
    # served whole: the stored bill (which may count an end token the logprobs omit)
    assert [s.usage.completion_tokens for s in native] == [s.usage.completion_tokens for s in samples[:3]]
    assert not PoolBackend(samples, native_n=False).capabilities.native_n


@pytest.mark.parametrize("recorded", [False, True, None])
async def test_pool_source_bills_as_the_recorded_backend(tmp_path, recorded) -> None:  # type: ignore[no-untyped-def]
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.pool import PoolSource

    world = make_world(11, 5, "two", "distinct", 2, problems=1)
    config = {} if recorded is None else {"native_n": recorded}
    with RunStore(tmp_path / "p.db") as st:
        rid = st.create_run(kind="pool", config=config, task="t", backend="b", model="m", strategy="pool-5", seed=0)
        st.put_problems(rid, [Problem("q0", "q")])
        st.put_samples(rid, "q0", world.samples["q0"], answers=[FMT.extract(s.text) for s in world.samples["q0"]],
                       correct=[False] * 5)
        src = PoolSource.from_store(st, rid)
    query = Query(Problem("q0", "q"), Prompt.user("q"), FMT, SamplingParams(max_tokens=MAX_TOKENS))
    d = await SelfConsistency(n=5).run(query, src.backend("q0", seed=0))
    # unrecorded: inferred from the stored samples, each billed as its own call here
    assert d.usage.calls == (1 if recorded else 5)
    assert d.usage.prompt_tokens == d.usage.calls * PROMPT_TOKENS


async def test_bench_adaptive_bills_per_sample_without_native_n() -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "adaptive.py"
    spec = importlib.util.spec_from_file_location("bench_adaptive_billing", path)
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = bench  # type: ignore[union-attr]
    try:
        spec.loader.exec_module(bench)  # type: ignore[union-attr]
        problems, pools = bench.synthetic_pool(6, 16, seed=1)
        single = await bench.run(bench.SyntheticTask(), problems, pools, 16, 2, 8, native_n=False)
        native = await bench.run(bench.SyntheticTask(), problems, pools, 16, 2, 8)
    finally:
        sys.modules.pop("bench_adaptive_billing", None)
    for a, b in zip(single, native):
        assert a["calls"] == pytest.approx(a["samples"]) and a["acc"] == b["acc"] and a["tokens"] == b["tokens"]
    assert native[0]["calls"] == 1  # SC@16 is one call of n = 16


@pytest.mark.parametrize("case", ["weighted-stored", "best-stored"])
def test_replay_equals_live_for_scores_of_any_magnitude(case: str) -> None:
    spec, make = CASES[case]
    for seed in range(4):
        world = make_world(4000 + seed, 13, ("two", "many")[seed % 2], "distinct", 2, stored=EXTREME)
        asyncio.run(check(world, spec, make, [0, 1], seed % 2 == 0))
