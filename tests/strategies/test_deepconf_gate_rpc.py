"""DeepConf online cuts low-confidence traces mid-way; gate, RPC and offline DeepConf select as computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.signals.rpc import fit_weibull_mixture, prune_paths
from thinktwice.types import Budget, Capabilities


async def test_deepconf_online_cuts_a_trace_and_bills_tokens_before_the_cut(make_query):
    good_a = Reply("x y #### A", confidence=0.9)   # 4 tokens
    good_b = Reply("x y #### B", confidence=0.9)
    low = Reply("a b c d e f #### A", confidence=[0.9, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    replies = [good_a, good_a, good_b, good_b] + [low, good_a, good_a, good_a]
    b = ScriptedBackend(replies)
    s = create_strategy("deepconf-online", warm_up=4, window=2, batch=4, max_samples=8)
    d = await s.run(make_query(), b)
    assert [n for _, _, n in b.calls] == [4, 4]
    cut = d.candidates[4]
    assert cut.sample.finish_reason == "monitor"
    assert cut.sample.usage.completion_tokens == 3  # window (.9, .2) falls below at the 3rd token
    assert cut.sample.text == "a b c"
    assert d.usage.completion_tokens == 4 * 4 + 3 + 3 * 4
    assert d.answer == "A" and d.votes["A"] > d.votes["B"]
    assert d.stopped_because == "max-samples"
    # the cut trace casts no vote: A has 2 warm-up + 3 later traces of equal weight
    assert d.votes["A"] == pytest.approx(5 / 2 * d.votes["B"])


async def test_deepconf_online_stops_on_consensus_after_warm_up(make_query):
    b = ScriptedBackend([Reply("x y #### A", confidence=0.9)] * 4)
    d = await create_strategy("deepconf-online", warm_up=4, window=2).run(make_query(), b)
    assert d.stopped_because == "converged" and len(d.candidates) == 4 and len(b.calls) == 1


async def test_deepconf_online_without_monitor_filters_after_the_fact(make_query, caplog):
    good_a = Reply("x y #### A", confidence=0.9)
    good_b = Reply("x y #### B", confidence=0.9)
    low = Reply("a b c d e f #### B", confidence=[0.9, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    caps = Capabilities(logprobs=True, top_logprobs=5, native_n=True)
    b = ScriptedBackend([good_a, good_a, good_b, good_b, low, good_a, good_a, good_a], capabilities=caps)
    d = await create_strategy("deepconf-online", warm_up=4, window=2, batch=4, max_samples=8).run(make_query(), b)
    assert d.candidates[4].sample.usage.completion_tokens == 8  # not cut: the backend cannot stop it
    assert d.answer == "A" and any(t.kind == "no-monitor" for t in d.trace)
    assert "cannot stop a trace" in caplog.text
    b = ScriptedBackend(["x #### A"], capabilities=Capabilities(native_n=True))
    with pytest.raises(CapabilityError):
        await create_strategy("deepconf-online").run(make_query(), b)


async def test_deepconf_offline_filters_the_least_confident(make_query):
    replies = [Reply("x y #### B", confidence=0.3)] * 3 + [Reply("x y #### A", confidence=0.95)] * 2
    d = await create_strategy("deepconf-offline", n=5, eta=0.4, window=2).run(make_query(), ScriptedBackend(replies))
    # the filtered B traces form no class (the released code votes over the kept traces only)
    assert d.answer == "A" and set(d.votes) == {"A"}
    with pytest.raises(ConfigError):
        create_strategy("deepconf-offline", score="median")


async def test_gate_answers_confident_sample_alone(make_query):
    b = ScriptedBackend([Reply("x #### A", confidence=0.95)] + ["x #### B"] * 7)
    d = await create_strategy("confidence-gate", threshold=0.9).run(make_query(), b)
    assert d.stopped_because == "confident" and d.answer == "A" and d.usage.calls == 1
    assert d.confidence == pytest.approx(0.95)


async def test_gate_samples_more_when_unsure(make_query):
    b = ScriptedBackend([Reply("x #### A", confidence=0.5)] + ["x #### B"] * 7)
    d = await create_strategy("confidence-gate", threshold=0.9).run(make_query(), b)
    assert d.stopped_because == "done" and d.answer == "B" and len(d.candidates) == 8
    assert [n for _, _, n in b.calls] == [1, 7]
    with pytest.raises(ConfigError):
        create_strategy("confidence-gate:self-certainty")  # not a probability: needs a threshold
    d = await create_strategy("confidence-gate", threshold=0.9).run(
        make_query(), ScriptedBackend([Reply("x #### A", confidence=0.5)] + ["x #### B"] * 7), Budget(max_calls=1))
    assert d.stopped_because == "budget" and d.answer == "A"


def test_weibull_mixture_separates_two_clusters():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.05, 0.15, 10), rng.uniform(0.8, 0.9, 10)])
    m = fit_weibull_mixture(p)
    assert 0.2 <= m.w <= 0.8
    lo, hi = sorted(m.means())
    assert lo < 0.3 and hi > 0.7
    keep = prune_paths(p)
    assert keep[10:].all() and not keep[:10].any()
    assert prune_paths(np.array([0.5, 0.5, 0.5])).all()


async def test_rpc_prunes_low_probability_paths_and_dedupes(make_query):
    # 4 low-probability paths say B; 3 high ones say A (two share a text: counted once)
    replies = ([Reply(f"w{i} #### B", confidence=0.1) for i in range(4)]
               + [Reply("same #### A", confidence=0.9)] * 2 + [Reply("other #### A", confidence=0.85)])
    d = await create_strategy("rpc", n=7).run(make_query(), ScriptedBackend(replies))
    assert d.answer == "A"
    assert d.votes["B"] == 0.0
    pa = math.exp((math.log(0.9) * 3) / 3)
    pb = math.exp(math.log(0.85))
    assert d.votes["A"] == pytest.approx(pa + pb)
    assert d.confidence == pytest.approx(1.0)


# -- DeepConf: width, exact windows, thresholds, warm-up weights ------------------------------------
@pytest.mark.parametrize("name", ["deepconf-online", "deepconf-offline"])
async def test_deepconf_refuses_one_logprob_per_token(make_query, name):
    # with top-1 only, -log p(chosen) grows as the model is less sure: the confidence would be inverted
    caps = Capabilities(logprobs=True, top_logprobs=1, native_n=True, monitor=True)
    with pytest.raises(CapabilityError, match="top_logprobs"):
        await create_strategy(name).run(make_query(), ScriptedBackend(["x #### A"] * 20, capabilities=caps))
    from dataclasses import replace

    from thinktwice.lm.pool import PoolBackend

    drawn = await ScriptedBackend([Reply("a b #### A", confidence=0.9)] * 4).sample(
        make_query().prompt, make_query().params, n=4)
    narrow = [replace(s, tokens=tuple(replace(t, top=t.top[:1]) for t in s.tokens or ())) for s in drawn]
    with pytest.raises(CapabilityError, match="top_logprobs"):  # a pool drawn with top_logprobs=1
        await create_strategy(name).run(make_query(), PoolBackend(narrow))


def _trace(confs: list[float]) -> list:
    from thinktwice.lm.scripted import synthetic_stat

    return [synthetic_stat(f" t{i}", c, 50, 4) for i, c in enumerate(confs)]


@settings(deadline=None, max_examples=60)
@given(confs=st.lists(st.floats(0.05, 0.99), min_size=1, max_size=40), window=st.integers(1, 12),
       pick=st.integers(0, 10_000))
def test_window_monitor_cuts_where_the_group_confidences_fall_below(confs, window, pick):
    from thinktwice.signals.token_stats import group_confidences
    from thinktwice.strategies.deepconf import WindowMonitor

    toks = _trace(confs)
    groups = group_confidences(toks, window)
    # thresholds exactly at a group's value (a tie must not cut) and just above it
    thr = float(groups[pick % groups.size])
    for t in (thr, np.nextafter(thr, np.inf)):
        mon = WindowMonitor(t, window, k=20)
        stepped = next((pos + 1 for pos, s in enumerate(toks) if mon(0, pos, s)), None)
        whole = WindowMonitor(t, window, k=20).first_stop(0, toks)
        below = np.flatnonzero(groups < t) if len(toks) >= window else np.array([], dtype=int)
        expected = int(below[0]) + window if below.size else None
        assert stepped == whole == expected


@settings(deadline=None, max_examples=200)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30),
       pct=st.sampled_from([0.0, 10.0, 9.999999999999998, 50.0, 90.0, 100.0, 37.5]))
def test_linear_percentile_is_numpy_s_to_the_last_bit(values, pct):
    from thinktwice.strategies.deepconf import linear_percentile

    assert linear_percentile(values, pct) == float(np.percentile(values, pct))


async def test_deepconf_online_warm_up_traces_below_the_threshold_weigh_nothing(make_query):
    # warm-up: 3 x A at 0.9 and one B whose lowest window (0.3) sets the threshold's lower end
    low_b = Reply("x y #### B", confidence=[0.3, 0.3, 0.3, 0.3])
    replies = [Reply("x y #### A", confidence=0.9)] * 3 + [low_b]
    d = await create_strategy("deepconf-online", warm_up=4, window=2, max_samples=4).run(
        make_query(), ScriptedBackend(replies))
    assert set(d.votes) == {"A"} and d.answer == "A"  # B is below the 10th percentile: no class at all
    # below the warm-up the cap is the warm-up: 2 traces, no more calls
    b = ScriptedBackend(replies)
    d = await create_strategy("deepconf-online", warm_up=4, window=2, max_samples=2).run(make_query(), b)
    assert len(d.candidates) == 2 and [n for _, _, n in b.calls] == [2]


async def test_deepconf_online_consensus_is_decided_exactly(make_query):
    # 19 equal weights for A and 1 for B: A holds exactly 0.95 of the weight, which stops the run
    replies = [Reply("x y #### A", confidence=0.9)] * 19 + [Reply("x y #### B", confidence=0.9)] + ["x #### C"] * 8
    b = ScriptedBackend(replies)
    d = await create_strategy("deepconf-online", warm_up=20, window=2, max_samples=28).run(make_query(), b)
    assert d.stopped_because == "converged" and len(d.candidates) == 20 and len(b.calls) == 1
