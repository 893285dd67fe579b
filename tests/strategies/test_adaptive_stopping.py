"""Adaptive-Consistency and ESC stop exactly where their rules predict, within budget."""

from __future__ import annotations

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.adaptive import beta_stop_probability, min_batch_to_stop
from thinktwice.types import Budget


def test_beta_probability_matches_hand_values():
    # P(Bin(m, 1/2) <= v1), m = v1 + v2 + 1
    assert beta_stop_probability(0, 0) == 0.5
    assert beta_stop_probability(3, 1) == 26 / 32
    assert beta_stop_probability(5, 1) == 1 - 8 / 128
    assert beta_stop_probability(6, 1) == 1 - 9 / 256
    assert min_batch_to_stop(0, 0, 0.95, 40) == 4  # 1 - 1/32 >= .95 > 1 - 1/16
    assert min_batch_to_stop(3, 1, 0.95, 40) == 3  # P(6,1) = .965, P(5,1) = .9375
    assert min_batch_to_stop(3, 1, 0.95, 2) == 2


async def test_adaptive_stops_after_predicted_samples(make_query):
    # stream A B A A A A ...: after 4 (A,B,A,A) P(3,1)=.81; the next batch is 3; A x3 gives P(6,1)=.965
    replies = ["s #### A", "s #### B"] + ["s #### A"] * 40
    b = ScriptedBackend(replies)
    d = await create_strategy("adaptive-consistency").run(make_query(), b)
    assert d.answer == "A"
    assert d.stopped_because == "converged"
    assert len(d.candidates) == 7
    assert [n for _, _, n in b.calls] == [4, 3]
    assert d.usage.calls == 2
    assert d.usage.completion_tokens == 7 * 3
    assert abs(d.confidence - 6 / 7) < 1e-12


async def test_adaptive_batched_equals_sequential_stop_point(make_query):
    # whatever the stream, the stop index equals the one-at-a-time rule's
    import random

    rng = random.Random(3)
    for _ in range(20):
        stream = [rng.choice("AAB") for _ in range(60)]
        seq_stop = None
        counts = {"A": 0, "B": 0}
        for i, a in enumerate(stream[:40], start=1):
            counts[a] += 1
            v1, v2 = max(counts.values()), min(counts.values())
            if beta_stop_probability(v1, v2) >= 0.95:
                seq_stop = i
                break
        seq_stop = seq_stop or 40
        b = ScriptedBackend([f"x #### {a}" for a in stream])
        d = await create_strategy("adaptive-consistency").run(make_query(), b)
        assert len(d.candidates) == seq_stop


async def test_adaptive_cap_and_budget_to_the_token(make_query):
    b = ScriptedBackend(["s #### A", "s #### B"], cycle=True)
    d = await create_strategy("adaptive-consistency", max_samples=10).run(make_query(), b)
    assert len(d.candidates) == 10 and d.stopped_because == "max-samples"

    b = ScriptedBackend(["s #### A", "s #### B"], cycle=True)
    d = await create_strategy("adaptive-consistency").run(make_query(), b, Budget(max_tokens=12))
    assert d.usage.completion_tokens == 12  # 4 samples x 3 tokens, then nothing fits
    assert d.stopped_because == "budget"
    assert d.answer == "A"  # 2-2 tie: the first class wins

    b = ScriptedBackend(["s #### A", "s #### B"], cycle=True)
    d = await create_strategy("adaptive-consistency").run(make_query(), b, Budget(max_tokens=20))
    assert d.usage.completion_tokens <= 20 and d.stopped_because == "budget"


async def test_adaptive_without_native_n_draws_concurrent_single_calls(make_query):
    from thinktwice.types import Capabilities

    b = ScriptedBackend(["s #### A"] * 10, capabilities=Capabilities(logprobs=True, native_n=False))
    d = await create_strategy("adaptive-consistency").run(make_query(), b)
    assert len(d.candidates) == 4 and d.usage.calls == 4 and d.stopped_because == "converged"


async def test_esc_stops_after_first_unanimous_window(make_query):
    replies = ["a #### A", "a #### A", "a #### B", "a #### A", "a #### A"] + ["a #### A"] * 5 + ["a #### C"] * 30
    b = ScriptedBackend(replies)
    d = await create_strategy("esc").run(make_query(), b)
    assert d.stopped_because == "converged"
    assert len(d.candidates) == 10
    assert [n for _, _, n in b.calls] == [5, 5]
    assert d.answer == "A" and abs(d.confidence - 9 / 10) < 1e-12
    assert d.usage.prompt_tokens == 2 * b.count_tokens(make_query().prompt)  # the prompt is re-sent per window


async def test_esc_runs_to_cap_and_respects_budget(make_query):
    b = ScriptedBackend(["a #### A", "a #### B"], cycle=True)
    d = await create_strategy("esc").run(make_query(), b)
    assert len(d.candidates) == 40 and d.usage.calls == 8 and d.stopped_because == "max-samples"

    b = ScriptedBackend(["a #### A", "a #### B"], cycle=True)
    d = await create_strategy("esc").run(make_query(), b, Budget(max_calls=3))
    assert d.usage.calls == 3 and len(d.candidates) == 15 and d.stopped_because == "budget"
