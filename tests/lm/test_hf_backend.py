"""HFBackend on CPU with a tiny randomly initialised Qwen2 model and a tokenizer trained in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from thinktwice.errors import ConfigError
from thinktwice.lm.hf import HFBackend
from thinktwice.lm.hf_decode import DecodeSpec, decode, prefill, sample_tokens
from thinktwice.lm.hf_tiny import save_tiny
from thinktwice.lm.vocab_stats import SamplerConfig
from thinktwice.types import Prompt, SamplingParams

PROMPT = Prompt.user("What is 7 times 6?")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny(tmp_path_factory.mktemp("tiny-qwen2")))


@pytest.fixture(scope="module")
def lm(model_dir: str) -> HFBackend:
    return HFBackend(model_dir, device="cpu", top_k_stats=5)


def _reference(model: object, ids: list[int], new: list[int], k: int) -> list[tuple[float, float, float, list[int], list[float]]]:
    """Slow reference: one full forward over prompt + generated tokens, statistics per position."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids + new])).logits[0].float()  # type: ignore[operator]
    lp = torch.log_softmax(logits, dim=-1)
    out = []
    for t, tok in enumerate(new):
        row = lp[len(ids) - 1 + t]
        p = row.exp()
        vals, top = torch.topk(row, k)
        out.append((float(row[tok]), float(-(p * row).sum()), float(-math.log(row.numel()) - row.mean()),
                    top.tolist(), vals.tolist()))
    return out


def test_statistics_match_a_full_forward_reference(lm: HFBackend) -> None:
    model = lm.hf_model
    ids = lm.prompt_tokens(PROMPT)
    got: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def sink(rows: np.ndarray, toks: np.ndarray, fs: np.ndarray | None, tops: np.ndarray | None) -> np.ndarray:
        assert fs is not None and tops is not None
        for j, r in enumerate(rows):
            got.setdefault(int(r), []).append((toks[j], fs[j], tops[j]))
        return np.zeros(len(rows), dtype=bool)

    spec = DecodeSpec(seeds=[3, 4, 5], sampler=SamplerConfig(temperature=1.0), max_tokens=10, stats_k=5, sync_every=4)
    with torch.inference_mode():
        cache, last = prefill(model, ids, lm.device)
        decode(model, cache, last, spec, sink)
    assert sorted(got) == [0, 1, 2]
    for chunks in got.values():
        toks = np.concatenate([c[0] for c in chunks]).tolist()
        fs = np.concatenate([c[1] for c in chunks])
        tops = np.concatenate([c[2] for c in chunks])
        assert len(toks) == 10
        for t, (lp, ent, sc, top_ids, top_lps) in enumerate(_reference(model, ids, toks, 5)):
            assert fs[t, 0] == pytest.approx(lp, abs=1e-4)
            assert fs[t, 1] == pytest.approx(ent, abs=1e-4)
            assert fs[t, 2] == pytest.approx(sc, abs=1e-4)
            assert tops[t].tolist() == top_ids
            np.testing.assert_allclose(fs[t, 3:], top_lps, atol=1e-4)


async def test_token_stats_on_samples_are_consistent(lm: HFBackend) -> None:
    (s,) = await lm.sample(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, seed=11, top_logprobs=3), n=1)
    assert s.tokens is not None and len(s.tokens) == s.usage.completion_tokens == 8
    for st in s.tokens:
        assert st.entropy is not None and st.entropy >= 0 and st.self_certainty is not None and st.self_certainty >= 0
        assert len(st.top) == 3 and st.top[0][1] >= st.top[1][1] >= st.top[2][1]
        assert st.logprob <= st.top[0][1] + 1e-6
    no = await lm.sample(PROMPT, SamplingParams(max_tokens=4, logprobs=False, seed=1), n=2)
    assert all(x.tokens is None for x in no)


async def test_batched_and_single_greedy_agree(lm: HFBackend) -> None:
    params = SamplingParams(max_tokens=12, temperature=0)
    many = await lm.sample(PROMPT, params, n=4)
    (one,) = await lm.sample(PROMPT, params, n=1)
    assert {s.text for s in many} == {one.text}
    assert [t.logprob for t in many[2].tokens or ()] == pytest.approx([t.logprob for t in one.tokens or ()], abs=1e-4)


async def test_seeds_reproduce_and_do_not_depend_on_n_or_batch(lm: HFBackend, model_dir: str) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    a = await lm.sample(PROMPT, params, n=5)
    b = await lm.sample(PROMPT, params, n=5)
    assert [s.text for s in a] == [s.text for s in b]
    assert len({s.text for s in a}) > 1  # different seeds per sequence
    assert [s.seed for s in a] == [7, 8, 9, 10, 11]
    (third,) = await lm.sample(PROMPT, params.replace(seed=9), n=1)
    assert third.text == a[2].text
    small = HFBackend(model_dir, device="cpu", max_batch=2)
    c = await small.sample(PROMPT, params, n=5)
    assert [s.text for s in c] == [s.text for s in a]


async def test_stop_strings_cut_the_text(lm: HFBackend) -> None:
    params = SamplingParams(max_tokens=16, temperature=0)
    (full,) = await lm.sample(PROMPT, params, n=1)
    stop = full.text[6:8]
    assert len(stop) == 2
    (cut,) = await lm.sample(PROMPT, params.replace(stop=(stop,)), n=1)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.usage.completion_tokens < full.usage.completion_tokens


async def test_monitor_stops_one_sequence_and_compaction_keeps_the_others(model_dir: str) -> None:
    lm = HFBackend(model_dir, device="cpu", sync_every=1)
    params = SamplingParams(max_tokens=9, temperature=1.0, seed=3)
    plain = await lm.sample(PROMPT, params, n=4)
    seen: list[tuple[int, int]] = []

    def monitor(i: int, pos: int, stat: object) -> bool:
        seen.append((i, pos))
        return i in (0, 1) and pos == 2  # two of four stop: the batch is compacted

    got = await lm.sample(PROMPT, params, n=4, monitor=monitor)
    assert [s.finish_reason for s in got] == ["monitor", "monitor", "length", "length"]
    assert [s.usage.completion_tokens for s in got] == [3, 3, 9, 9]
    assert [s.text for s in got[2:]] == [s.text for s in plain[2:]]
    assert got[0].tokens == plain[0].tokens[:3]  # type: ignore[index]
    assert (0, 3) not in seen and (3, 8) in seen


async def test_usage_and_prompt_rendering(lm: HFBackend) -> None:
    text, special = lm.render(PROMPT)
    assert text.startswith("<|im_start|>user\nWhat is 7 times 6?<|im_end|>") and text.endswith("assistant\n")
    assert not special
    assert lm.render(PROMPT.with_prefix("The answer"))[0].endswith("assistant\nThe answer")
    assert lm.render(Prompt(raw="2+2="))[0] == "2+2="
    n_prompt = lm.count_tokens(PROMPT)
    assert n_prompt == len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    out = await lm.sample(PROMPT, SamplingParams(max_tokens=5, seed=1), n=3)
    assert [s.usage.calls for s in out] == [1, 0, 0]
    assert [s.usage.prompt_tokens for s in out] == [n_prompt, 0, 0]
    assert all(s.usage.completion_tokens == 5 and s.finish_reason == "length" for s in out)
    assert await lm.sample(PROMPT, SamplingParams(max_tokens=5), n=0) == []
    caps = lm.capabilities
    assert caps.full_vocab and caps.native_n and caps.monitor and caps.hidden_states and caps.continuation


async def test_context_length_caps_generation(lm: HFBackend) -> None:
    from thinktwice.errors import ContextLengthExceeded

    n_prompt = lm.count_tokens(PROMPT)
    room = lm.context_length - n_prompt
    assert lm.context_length == 512
    (s,) = await lm.sample(PROMPT.with_prefix(""), SamplingParams(max_tokens=room + 50, temperature=0,
                                                                   logprobs=False), n=1)
    assert s.usage.completion_tokens <= room
    with pytest.raises(ContextLengthExceeded):
        await lm.sample(Prompt(raw="7 times 6 " * 400), SamplingParams(max_tokens=4), n=1)


def test_filters_reduce_to_greedy_at_their_limits() -> None:
    g = torch.Generator().manual_seed(0)
    lf = torch.randn(6, 50, generator=g)
    u = torch.rand(6, generator=g)
    greedy = lf.argmax(-1)
    for cfg in (SamplerConfig(1.0, top_k=1), SamplerConfig(1.0, top_p=1e-6), SamplerConfig(1.0, min_p=0.999)):
        assert torch.equal(sample_tokens(lf, u, cfg), greedy)
    wide = sample_tokens(lf, u, SamplerConfig(1.0, top_k=10))
    top10 = torch.topk(lf, 10).indices
    assert all(int(t) in top10[i].tolist() for i, t in enumerate(wide))


def test_bad_configuration_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError):
        HFBackend(None)
    with pytest.raises(ConfigError):
        HFBackend("/definitely/not/here")
    with pytest.raises(ConfigError):
        HFBackend(".", device="tpu")
    with pytest.raises(ConfigError):
        HFBackend(".", dtype="int3")
