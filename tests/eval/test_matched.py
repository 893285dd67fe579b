"""Compute-matched SC baselines: exact token matching by an SC@k / SC@(k+1) mixture (METHODS §1.5)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import ConfigError
from thinktwice.eval.matched import (
    MatchedSC,
    match_sc,
    matched_baseline,
    pool_sc_tokens,
    replay_strategy,
)
from thinktwice.lm.pool import PoolSource
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.tasks.gsm8k import Gsm8kTask
from thinktwice.types import Sample, Usage


def test_a_strategy_at_1_49_samples_gets_a_baseline_spending_as_much() -> None:
    t = 100.0
    sc = [k * t for k in range(1, 9)]
    m = match_sc(1.49 * t, sc)
    # round(1.49) = 1 would give SC@1 at 100 tokens, 33% less than the strategy
    assert m.tokens >= 1.49 * t and m.tokens == pytest.approx(1.49 * t, rel=1e-12)
    assert (m.k, m.sizes, m.capped, m.note) == (1, (1, 2), False, None)
    assert m.weight == pytest.approx(0.49)
    assert m.label == "SC@1/2 mix w=0.49"


def test_exact_sizes_below_one_and_above_the_pool() -> None:
    sc = [100.0, 200.0, 300.0]
    assert match_sc(200.0, sc) == MatchedSC(200.0, 2, 0.0, 200.0)
    assert match_sc(200.0 * (1 + 1e-13), sc).weight == 0.0  # float noise is not a mixture
    low = match_sc(40.0, sc)
    assert (low.k, low.weight, low.tokens, low.capped) == (1, 0.0, 100.0, False)
    assert low.note == "SC@1, the smallest baseline, spends 100 generated tokens, more than the strategy's 40"
    assert "spends 28.5 generated tokens, more than the strategy's 28.3" in (match_sc(28.3, [28.5]).note or "")
    cap = match_sc(450.0, sc)
    assert (cap.k, cap.weight, cap.tokens, cap.capped) == (3, 0.0, 300.0, True)
    assert cap.label == "SC@3 (capped)" and "capped at the pool size" in (cap.note or "")
    assert "fewer than the strategy's 450" in (cap.note or "")


def test_labels_never_round_a_weight_to_0_or_1() -> None:
    assert MatchedSC(1.0, 13, 0.996, 1.0).label == "SC@13/14 mix w=0.996"
    assert MatchedSC(1.0, 2, 0.0004, 1.0).label == "SC@2/3 mix w=0.0004"
    assert MatchedSC(1.0, 2, 0.37, 1.0).label == "SC@2/3 mix w=0.37"


def test_interpolation_is_per_item() -> None:
    m = match_sc(125.0, [100.0, 200.0])
    acc = m.interpolate({1: [1.0, 0.0, 0.5], 2: [0.0, 1.0, 0.5]})
    assert acc.tolist() == pytest.approx([0.75, 0.25, 0.5])
    assert match_sc(100.0, [100.0, 200.0]).interpolate({1: [1.0, 0.0]}).tolist() == [1.0, 0.0]  # no SC@2 needed
    with pytest.raises(ConfigError):
        m.interpolate({1: [1.0], 2: [1.0, 0.0]})


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        match_sc(10.0, [])
    with pytest.raises(ConfigError):
        match_sc(10.0, [100.0, 50.0])
    with pytest.raises(ConfigError):
        match_sc(float("nan"), [100.0])


@settings(deadline=None, max_examples=200)
@given(st.lists(st.floats(0.0, 500.0), min_size=1, max_size=12), st.floats(0.0, 8000.0))
def test_mixture_spends_exactly_the_target_unless_capped(steps: list[float], target: float) -> None:
    sc = np.cumsum(steps).tolist()
    m = match_sc(target, sc)
    assert 1 <= m.k <= len(sc) and 0.0 <= m.weight < 1.0
    if m.weight > 0:
        assert m.k < len(sc)
        assert (1 - m.weight) * sc[m.k - 1] + m.weight * sc[m.k] == pytest.approx(m.tokens)
    if m.capped:
        assert m.tokens < target and m.k == len(sc)
    else:
        assert m.tokens >= target * (1 - 1e-9) - 1e-9  # never spends less
        if target >= sc[0]:
            assert m.tokens == pytest.approx(target, rel=1e-9, abs=1e-9)


# -- pool-based token counts --------------------------------------------------------------------

def _task(tmp_path: Path, n: int) -> Gsm8kTask:
    data = tmp_path / "mini.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, n + 1)) + "\n")
    return Gsm8kTask(path=data)


def _sample(answer: int, tokens: int) -> Sample:
    return Sample(text=f"The answer is {answer}.", usage=Usage(1, 20, 0, tokens))


@settings(deadline=None, max_examples=15)
@given(st.lists(st.lists(st.integers(1, 60), min_size=4, max_size=4), min_size=2, max_size=3),
       st.integers(1, 3))
def test_pool_sc_tokens_are_what_sc_replays_are_billed(tmp_path_factory: pytest.TempPathFactory,
                                                       lengths: list[list[int]], n_seeds: int) -> None:
    task = _task(tmp_path_factory.mktemp("t"), len(lengths))
    problems = list(task.load())
    source = PoolSource({p.id: [_sample(j, n) for j, n in enumerate(row)] for p, row in zip(problems, lengths)})
    seeds = list(range(n_seeds))
    T = asyncio.run(pool_sc_tokens(source, task, problems, seeds=seeds))
    assert len(T) == 4 and T == sorted(T)
    for k in range(1, 5):
        r = asyncio.run(replay_strategy(SelfConsistency(n=k), source, task, problems, seeds=seeds))
        assert T[k - 1] == pytest.approx(r.per_problem("completion_tokens"))
    assert T[-1] == pytest.approx(np.sum(lengths, axis=1).mean())  # the whole pool


async def test_pool_tokens_not_k_times_t_when_lengths_differ(tmp_path: Path) -> None:
    # one order: SC@1 spends the first sample of that order, not the pool's mean
    task = _task(tmp_path, 1)
    (p,) = task.load()
    source = PoolSource({p.id: [_sample(2, 10), _sample(2, 100)]})
    T = await pool_sc_tokens(source, task, [p], seeds=[0])
    first = source.backend(p.id, seed=0).order[0]
    assert T == [[10.0, 100.0][first], 110.0] and T[0] != source.mean_completion_tokens()


async def test_matched_baseline_interpolates_replayed_accuracy(tmp_path: Path) -> None:
    task = _task(tmp_path, 2)
    problems = list(task.load())  # gold 2 and 4
    # problem 0: first-sample accuracy depends on the order; SC@2 ties go to the first answer
    source = PoolSource({problems[0].id: [_sample(2, 10), _sample(5, 10), _sample(2, 10)],
                         problems[1].id: [_sample(4, 10), _sample(4, 10), _sample(4, 10)]})
    seeds = [0, 1, 2, 3]
    m, acc = await matched_baseline(15.0, source, task, problems, seeds=seeds)
    assert (m.k, m.weight, m.tokens) == (1, 0.5, 15.0)
    sc1 = (await replay_strategy(SelfConsistency(n=1), source, task, problems, seeds=seeds)).accuracy
    sc2 = (await replay_strategy(SelfConsistency(n=2), source, task, problems, seeds=seeds)).accuracy
    assert acc.tolist() == pytest.approx([(a + b) / 2 for a, b in zip(sc1, sc2)])
    capped, _ = await matched_baseline(45.0, source, task, problems, seeds=seeds)
    assert capped.capped and capped.tokens == 30.0 and capped.k == 3


def test_demo_rows_are_matched_exactly() -> None:
    from thinktwice.organism.demo import DemoRow, _matched

    sc_by_k = {1: (1.0, 0.0), 2: (0.0, 0.0), 3: (1.0, 1.0)}
    row = _matched(DemoRow("greedy", 0.5, 0.0, 1.0, 1.0, 149.0), [1.0, 0.0], sc_by_k, [100.0, 200.0, 300.0], seed=0)
    assert row.matched_tokens == pytest.approx(149.0) and row.matched_label == "SC@1/2 mix w=0.49"
    assert (row.matched_k, row.matched_capped) == (1, False) and row.matched_weight == pytest.approx(0.49)
    assert row.matched_accuracy == pytest.approx(0.51 * 0.5)  # per problem: 0.51 x SC@1 + 0.49 x SC@2
    assert row.delta == pytest.approx(0.5 - 0.51 * 0.5)
    capped = _matched(DemoRow("x", 0.5, 0.0, 1.0, 1.0, 400.0), [1.0, 0.0], sc_by_k, [100.0, 200.0, 300.0], seed=0)
    assert capped.matched_capped and capped.matched_tokens == 300.0 and capped.matched_label == "SC@3 (capped)"
