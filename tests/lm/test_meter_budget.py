import asyncio

import pytest

from thinktwice.lm.meter import BudgetExhausted, Meter
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.types import Budget, Capabilities, Prompt, SamplingParams

P = Prompt.user("count to ten")  # 4 whitespace tokens: "user:", "count", "to", "ten"


async def test_meter_bills_by_stage_and_totals():
    b = ScriptedBackend(["one two three", "four five"], cycle=True)
    m = Meter(b)
    await m.sample(P, SamplingParams(), 2)
    await m.sample(P, SamplingParams(), 1, stage="p-true")
    assert m.usage.calls == 2 and m.usage.completion_tokens == 3 + 2 + 3
    assert m.usage.prompt_tokens == 2 * b.count_tokens(P)
    assert m.stages["sample"].completion_tokens == 5 and m.stages["p-true"].calls == 1
    assert m.samples_drawn == 3


async def test_token_budget_caps_max_tokens_and_never_overshoots():
    b = ScriptedBackend(["a b c d e f g h"], cycle=True)
    m = Meter(b, Budget(max_tokens=10))
    s1 = await m.sample(P, SamplingParams(max_tokens=100), 3)  # 10 // 3 = 3 tokens each
    assert [x.usage.completion_tokens for x in s1] == [3, 3, 3]
    s2 = await m.sample(P, SamplingParams(max_tokens=100), 3)  # 1 token left: one sample of 1 token
    assert len(s2) == 1 and s2[0].usage.completion_tokens == 1
    assert m.usage.completion_tokens == 10
    with pytest.raises(BudgetExhausted):
        await m.sample(P, SamplingParams(), 1)


async def test_call_and_sample_budgets():
    b = ScriptedBackend(["x"], cycle=True)
    m = Meter(b, Budget(max_calls=2, max_samples=3))
    assert len(await m.sample(P, SamplingParams(), 2)) == 2
    assert len(await m.sample(P, SamplingParams(), 5)) == 1
    with pytest.raises(BudgetExhausted, match="calls"):
        await m.sample(P, SamplingParams(), 1)


async def test_prompt_token_budget_checked_before_the_call():
    b = ScriptedBackend(["x"], cycle=True)
    per = b.count_tokens(P)
    m = Meter(b, Budget(max_prompt_tokens=per * 2 - 1))
    await m.sample(P, SamplingParams(), 1)
    with pytest.raises(BudgetExhausted, match="prompt"):
        await m.sample(P, SamplingParams(), 1)
    assert len(b.calls) == 1


async def test_prompt_budget_reduces_n_without_native_n():
    caps = Capabilities(logprobs=True, native_n=False)
    b = ScriptedBackend(["x"], cycle=True, capabilities=caps)
    per = b.count_tokens(P)
    m = Meter(b, Budget(max_prompt_tokens=per * 2))
    assert len(await m.sample(P, SamplingParams(), 5)) == 2


async def test_concurrent_calls_reserve_budget():
    b = ScriptedBackend([Reply("a b c d", delay=0.01)], cycle=True)
    m = Meter(b, Budget(max_tokens=8))
    results = await asyncio.gather(*(m.sample(P, SamplingParams(max_tokens=4), 1) for _ in range(4)),
                                   return_exceptions=True)
    got = [r for r in results if isinstance(r, list)]
    assert sum(s.usage.completion_tokens for r in got for s in r) <= 8
    assert m.usage.completion_tokens <= 8
    assert any(isinstance(r, BudgetExhausted) for r in results)
