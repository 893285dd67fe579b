import math

import pytest

from thinktwice.errors import RateLimited, ScriptExhausted
from thinktwice.lm.scripted import Reply, ScriptedBackend, synthetic_stat, tokenize
from thinktwice.types import Prompt, SamplingParams


def test_tokenize_round_trips():
    text = "  The answer is\n#### 42."
    assert "".join(tokenize(text)) == text


def test_synthetic_stat_matches_hand_computation():
    st = synthetic_stat("x", 0.5, vocab_size=3, top_k=2)
    # p = (0.5, 0.25, 0.25)
    assert math.isclose(st.logprob, math.log(0.5))
    assert math.isclose(st.entropy, -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert math.isclose(st.self_certainty, -math.log(3) - (math.log(0.5) + 2 * math.log(0.25)) / 3)
    assert st.top[0] == ("x", math.log(0.5)) and len(st.top) == 2


async def test_rules_by_prompt_substring_and_usage_convention():
    b = ScriptedBackend(rules={"apple": ["red fruit", "green fruit"], "sky": ["blue"]})
    out = await b.sample(Prompt.user("what colour is an apple"), SamplingParams(), 2)
    assert [s.text for s in out] == ["red fruit", "green fruit"]
    assert out[0].usage.calls == 1 and out[1].usage.calls == 0
    assert out[0].usage.prompt_tokens == b.count_tokens(Prompt.user("what colour is an apple"))
    assert out[1].usage.prompt_tokens == 0 and out[1].usage.completion_tokens == 2
    with pytest.raises(ScriptExhausted):
        await b.sample(Prompt.user("apple?"), SamplingParams(), 1)


async def test_stop_max_tokens_and_errors():
    b = ScriptedBackend([Reply("one two three four"), "alpha STOP beta", Reply(error=RateLimited("slow down"))])
    s = (await b.sample(Prompt.user("q"), SamplingParams(max_tokens=2), 1))[0]
    assert s.text == "one two" and s.finish_reason == "length"
    s = (await b.sample(Prompt.user("q"), SamplingParams(stop=("STOP",)), 1))[0]
    assert s.text == "alpha " and s.finish_reason == "stop"
    with pytest.raises(RateLimited):
        await b.sample(Prompt.user("q"), SamplingParams(), 1)


async def test_monitor_cuts_a_sequence():
    b = ScriptedBackend([Reply("a b c d e", confidence=[0.9, 0.9, 0.1, 0.9, 0.9])])
    seen = []

    def monitor(i, pos, st):
        seen.append(pos)
        return math.exp(st.logprob) < 0.5

    s = (await b.sample(Prompt.user("q"), SamplingParams(), 1, monitor=monitor))[0]
    assert s.finish_reason == "monitor" and s.usage.completion_tokens == 3 and seen == [0, 1, 2]


async def test_handler_and_cycle():
    b = ScriptedBackend(handler=lambda p, params, i: f"#{i} {params.seed}")
    out = await b.sample(Prompt.user("q"), SamplingParams(seed=10), 2)
    assert [s.text for s in out] == ["#0 10", "#1 10"] and [s.seed for s in out] == [10, 11]
    c = ScriptedBackend(["a", "b"], cycle=True)
    texts = [s.text for s in await c.sample(Prompt.user("q"), SamplingParams(), 5)]
    assert texts == ["a", "b", "a", "b", "a"]
