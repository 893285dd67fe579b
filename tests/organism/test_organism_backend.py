"""OrganismBackend against the shipped checkpoint: batching, seeds, exact token statistics, monitor, usage."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from thinktwice import lm
from thinktwice.errors import ConfigError
from thinktwice.registry import tasks
from thinktwice.types import Message, Prompt, SamplingParams


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    return lm.create("organism")


@pytest.fixture(scope="module")
def prompts():  # type: ignore[no-untyped-def]
    t = tasks.create("arith")
    return [t.prompt(p) for p in t.load("test", 3)]


async def test_batched_greedy_equals_single_and_is_a_solution(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    greedy = SamplingParams(temperature=0, max_tokens=160)
    for p in prompts:
        one = await backend.sample(p, greedy)
        many = await backend.sample(p, greedy, n=3)
        assert len(many) == 3 and {s.text for s in many} == {one[0].text}
        assert "\n#### " in one[0].text and not one[0].text.endswith("\n")
        assert one[0].finish_reason == "stop"


async def test_seeds_reproduce_and_sample_i_uses_seed_plus_i(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(temperature=1.0, max_tokens=160, seed=11)
    a = await backend.sample(prompts[0], params, n=6)
    b = await backend.sample(prompts[0], params, n=6)
    assert [s.text for s in a] == [s.text for s in b]
    assert len({s.text for s in a}) > 1  # sampling at T=1 varies
    third = await backend.sample(prompts[0], params.replace(seed=13))
    assert third[0].text == a[2].text and a[2].seed == 13


async def test_usage_follows_the_sibling_convention(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    s = await backend.sample(prompts[1], SamplingParams(temperature=0.8, seed=1), n=4)
    assert [x.usage.calls for x in s] == [1, 0, 0, 0]
    assert s[0].usage.prompt_tokens == backend.count_tokens(prompts[1]) and s[1].usage.prompt_tokens == 0
    assert all(x.usage.completion_tokens == len(x.tokens) for x in s)
    assert "".join(t.token for t in s[0].tokens).startswith(s[0].text)


async def test_stats_match_a_full_forward_reference(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(temperature=0.9, seed=5, top_logprobs=5, max_tokens=160)
    samples = await backend.sample(prompts[2], params, n=2)
    ckpt = backend._load()
    tok, model = ckpt.tokenizer, ckpt.model
    for s in samples:
        gen = [tok.index[t.token] if t.token != "<eos>" else tok.eos_id for t in s.tokens]
        ids = [tok.eos_id, *tok.encode(prompts[2].raw)] + gen
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0].double(), -1)  # (T, V)
        start = len(ids) - len(gen) - 1
        for j, st in enumerate(s.tokens):
            row = logp[start + j]
            assert st.logprob == pytest.approx(float(row[gen[j]]), abs=1e-4)
            assert st.entropy == pytest.approx(float(-(row.exp() * row).sum()), abs=1e-4)
            assert st.self_certainty == pytest.approx(float(-math.log(row.numel()) - row.mean()), abs=1e-4)
            top = torch.topk(row, 5)
            assert [a for a, _ in st.top] == [tok.token(i) for i in top.indices.tolist()]
            assert [b for _, b in st.top] == pytest.approx(top.values.tolist(), abs=1e-4)


async def test_monitor_stops_one_sequence(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []

    def monitor(i: int, pos: int, stat) -> bool:  # type: ignore[no-untyped-def]
        seen.append((i, pos))
        return i == 1 and pos == 3

    s = await backend.sample(prompts[0], SamplingParams(temperature=0.7, seed=2), n=2, monitor=monitor)
    assert s[1].finish_reason == "monitor" and len(s[1].tokens) == 4
    assert s[0].finish_reason == "stop" and len(s[0].tokens) > 4
    assert (0, 5) in seen and (1, 4) not in seen


async def test_limits_stops_prefix_and_chat_prompts(backend, prompts) -> None:  # type: ignore[no-untyped-def]
    short = await backend.sample(prompts[0], SamplingParams(temperature=0, max_tokens=3))
    assert short[0].finish_reason == "length" and short[0].usage.completion_tokens == 3
    cut = await backend.sample(prompts[0], SamplingParams(temperature=0, stop=("=",)))
    assert "=" not in cut[0].text and cut[0].finish_reason == "stop"
    full = (await backend.sample(prompts[0], SamplingParams(temperature=0)))[0].text
    head = full.split(". ")[0] + ". "
    cont = await backend.sample(prompts[0].with_prefix(head), SamplingParams(temperature=0))
    assert head + cont[0].text == full
    chat = Prompt(messages=(Message("user", prompts[0].raw.strip()),))
    assert (await backend.sample(chat, SamplingParams(temperature=0)))[0].text == full
    assert await backend.sample(prompts[0], SamplingParams(), n=0) == []
    with pytest.raises(ConfigError):
        await backend.sample(Prompt(messages=(Message("system", "hi"),)), SamplingParams())
    caps = backend.capabilities
    assert caps.full_vocab and caps.native_n and caps.monitor and caps.continuation and caps.top_logprobs >= 5
