"""PoolBackend replays stored samples: seeded order, truncation, monitor cuts, honest billing."""

from __future__ import annotations

import re

import pytest

from thinktwice.lm.pool import PoolBackend, PoolExhausted, PoolSource
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.tasks.base import Query
from thinktwice.types import Problem, Prompt, SamplingParams


class _Answers:
    def extract(self, text):
        m = re.search(r"####\s*(\S+)", text)
        return m.group(1) if m else None

    def canonical(self, a):
        return a.strip()

    def equivalent(self, a, b):
        return a.strip() == b.strip()


def _query():
    return Query(Problem("p", "q?"), Prompt.user("what is q?"), _Answers(), SamplingParams(max_tokens=64))


async def _live_samples(replies, n):
    b = ScriptedBackend(replies)
    return await b.sample(_query().prompt, SamplingParams(max_tokens=64), n=n)


async def test_order_is_seeded_and_exhaustion_is_an_error():
    pool = await _live_samples([f"x #### {i}" for i in range(10)], 10)
    a = PoolBackend(pool, seed=1)
    b = PoolBackend(pool, seed=1)
    c = PoolBackend(pool, seed=2)
    ta = [s.text for s in await a.sample(_query().prompt, SamplingParams(), n=10)]
    tb = [s.text for s in await b.sample(_query().prompt, SamplingParams(), n=10)]
    tc = [s.text for s in await c.sample(_query().prompt, SamplingParams(), n=10)]
    assert ta == tb and sorted(ta) == sorted(s.text for s in pool) and ta != tc
    with pytest.raises(PoolExhausted):
        await a.sample(_query().prompt, SamplingParams(), n=1)


async def test_billing_follows_the_call_convention():
    pool = await _live_samples(["a b c #### 1", "d #### 2"], 2)
    b = PoolBackend(pool, shuffle=False)
    out = await b.sample(_query().prompt, SamplingParams(), n=2)
    assert [s.usage.calls for s in out] == [1, 0]
    assert out[0].usage.prompt_tokens == pool[0].usage.prompt_tokens > 0 and out[1].usage.prompt_tokens == 0
    assert [s.usage.completion_tokens for s in out] == [5, 3]


async def test_max_tokens_and_monitor_truncate_and_bill_only_served_tokens():
    pool = await _live_samples([Reply("one two three four five #### 6", confidence=[0.9, 0.9, 0.2, 0.9])], 1)
    b = PoolBackend(pool, shuffle=False)
    [s] = await b.sample(_query().prompt, SamplingParams(max_tokens=2), n=1)
    assert s.text == "one two" and s.usage.completion_tokens == 2 and s.finish_reason == "length"

    b = PoolBackend(pool, shuffle=False)
    [s] = await b.sample(_query().prompt, SamplingParams(), n=1,
                         monitor=lambda i, pos, st: st.logprob < -1.0)
    assert s.text == "one two three" and s.usage.completion_tokens == 3 and s.finish_reason == "monitor"
    assert len(s.tokens) == 3


async def test_pool_replay_equals_live_run():
    replies = ["r #### A", "r #### B", "r #### A", "r #### C", "r #### B", "r #### B", "r #### B", "r #### A"]
    pool = await _live_samples(replies, 8)
    for name in ("self-consistency", "adaptive-consistency", "esc"):
        opts = {"n": 8} if name == "self-consistency" else {"max_samples": 8}
        if name == "esc":
            opts["window"] = 4
        live = await create_strategy(name, **opts).run(_query(), ScriptedBackend(replies))
        replay = await create_strategy(name, **opts).run(_query(), PoolBackend(pool, shuffle=False))
        assert replay.answer == live.answer
        assert [c.answer for c in replay.candidates] == [c.answer for c in live.candidates]
        assert replay.usage.completion_tokens == live.usage.completion_tokens
        assert replay.usage.calls == live.usage.calls
        assert replay.usage.prompt_tokens == live.usage.prompt_tokens
        assert replay.stopped_because == live.stopped_because


def test_pool_source_builds_backends_per_problem():
    from thinktwice.types import Sample, Usage

    src = PoolSource({"a": [Sample("x", usage=Usage(1, 5, 0, 2))] * 3, "b": [Sample("y")]})
    assert len(src) == 2 and src.min_size() == 1 and src.backend("a").remaining == 3
    assert src.mean_completion_tokens() == pytest.approx((2 * 3 + 0) / 4)
    with pytest.raises(PoolExhausted):
        src.backend("zzz")


async def test_pool_source_from_store_replays_stored_samples(tmp_path):
    from thinktwice.eval.store import RunStore

    samples = await _live_samples(["s #### A", "s #### B", "s #### A"], 3)
    with RunStore(tmp_path / "p.db") as st:
        rid = st.create_run(kind="pool", config={}, task="t", backend="scripted", model="m", strategy="sc", seed=0)
        st.put_problems(rid, [Problem("p", "q?")])
        st.put_samples(rid, "p", samples, answers=["A", "B", "A"], correct=[True, False, True])
        src = PoolSource.from_store(st, rid)
    assert len(src) == 1 and src.size("p") == 3
    replay = await create_strategy("self-consistency", n=3).run(_query(), src.backend("p", seed=0))
    assert replay.answer == "A" and replay.usage.completion_tokens == sum(s.usage.completion_tokens for s in samples)
    assert replay.candidates[0].sample.tokens is not None


async def test_pool_refuses_prompts_other_than_the_problem_s():
    from thinktwice.errors import CapabilityError

    pool = await _live_samples(["s #### A"] * 4, 4)
    b = PoolBackend(pool, prompt=_query().prompt)
    assert len(await b.sample(_query().prompt, SamplingParams(), n=1)) == 1
    with pytest.raises(CapabilityError):
        await b.sample(_query().prompt.with_prefix("s #### A\nWait,"), SamplingParams(), n=1)
    with pytest.raises(CapabilityError):
        await create_strategy("usc", n=2).run(_query(), PoolBackend(pool, prompt=_query().prompt))
