"""OpenAIBackend against FakeOpenAIServer over real HTTP: requests, parsing, usage, n handling, errors."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from thinktwice.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    RateLimited,
)
from thinktwice.lm import create
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Prompt, SamplingParams

Q = Prompt.user("What is 6 times 7?", system="Be brief.")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_chat_texts_usage_and_endpoint_match_the_server() -> None:
    with FakeOpenAIServer(record=True, cached_tokens=3) as srv:
        async with OpenAIBackend(srv.url, model="m") as lm:
            samples = await lm.sample(Q, SamplingParams(logprobs=False), n=1)
        path, body, resp = srv.log[0]
    assert path == "/v1/chat/completions"
    assert body["messages"][-1] == {"role": "user", "content": "What is 6 times 7?"} and body["model"] == "m"
    (s,) = samples
    assert s.text == resp["choices"][0]["message"]["content"] and s.tokens is None
    assert s.usage.calls == 1 and s.usage.prompt_tokens == resp["usage"]["prompt_tokens"]
    assert s.usage.completion_tokens == resp["usage"]["completion_tokens"] and s.usage.cached_prompt_tokens == 3
    assert not s.usage.estimated and s.usage.seconds > 0
    assert s.endpoint == srv.url and s.model == "fake-model"


async def test_chat_logprobs_are_the_values_the_server_sent() -> None:
    with FakeOpenAIServer(record=True) as srv:
        async with OpenAIBackend(srv.url) as lm:
            (s,) = await lm.sample(Q, SamplingParams(top_logprobs=3, seed=5))
        body, resp = srv.log[0][1], srv.log[0][2]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["seed"] == 5
    sent = resp["choices"][0]["logprobs"]["content"]
    assert s.tokens is not None and len(s.tokens) == len(sent) == s.usage.completion_tokens
    for st, e in zip(s.tokens, sent):
        assert st.token == e["token"] and st.logprob == e["logprob"]
        assert st.top == tuple((t["token"], t["logprob"]) for t in e["top_logprobs"])
        assert st.entropy is None and st.self_certainty is None and not st.approx


async def test_completions_logprobs_and_raw_prompt() -> None:
    with FakeOpenAIServer(record=True) as srv:
        async with OpenAIBackend(srv.url, endpoint="completions", top_logprobs=2) as lm:
            (s,) = await lm.sample(Prompt(raw="Q: 6*7?\nA:"), SamplingParams(max_tokens=6))
        body, resp = srv.log[0][1], srv.log[0][2]
    assert srv.log[0][0] == "/v1/completions" and body["prompt"] == "Q: 6*7?\nA:" and body["logprobs"] == 2
    lp = resp["choices"][0]["logprobs"]
    assert s.tokens is not None and [t.token for t in s.tokens] == lp["tokens"]
    assert [t.logprob for t in s.tokens] == lp["token_logprobs"]
    for st, alts in zip(s.tokens, lp["top_logprobs"]):
        assert dict(st.top) == alts and [v for _, v in st.top] == sorted(alts.values(), reverse=True)
    assert s.finish_reason == "length" and s.usage.completion_tokens == 6


async def test_raw_prompt_goes_to_completions_even_on_chat_backend() -> None:
    with FakeOpenAIServer() as srv:
        async with OpenAIBackend(srv.url) as lm:
            await lm.sample(Prompt(raw="plain"), SamplingParams())
        assert srv.stats.by_path == {"/v1/completions": 1}


async def test_approx_stats_are_flagged() -> None:
    with FakeOpenAIServer() as srv:
        async with OpenAIBackend(srv.url, approx_stats=True) as lm:
            (s,) = await lm.sample(Q, SamplingParams(top_logprobs=4))
    assert s.tokens
    for st in s.tokens:
        assert st.approx and st.entropy is not None and 0 <= st.entropy <= math.log(4) + 1e-9
        assert st.self_certainty is not None and st.self_certainty >= -1e-9


async def test_native_n_is_one_request_and_usage_follows_the_convention() -> None:
    with FakeOpenAIServer(record=True) as srv:
        async with OpenAIBackend(srv.url) as lm:
            samples = await lm.sample(Q, SamplingParams(seed=2, logprobs=False), n=4)
        resp = srv.log[0][2]
        assert srv.stats.requests == 1 and srv.log[0][1]["n"] == 4
    assert [s.usage.calls for s in samples] == [1, 0, 0, 0]
    assert [s.usage.prompt_tokens for s in samples][1:] == [0, 0, 0]
    assert samples[0].usage.prompt_tokens == resp["usage"]["prompt_tokens"]
    assert sum(s.usage.completion_tokens for s in samples) == resp["usage"]["completion_tokens"]
    assert [s.seed for s in samples] == [2, 3, 4, 5]
    assert [s.text for s in samples] == [c["message"]["content"] for c in resp["choices"]]


async def test_per_sample_completion_tokens_come_from_logprobs_when_they_add_up() -> None:
    with FakeOpenAIServer(record=True) as srv:
        async with OpenAIBackend(srv.url) as lm:
            samples = await lm.sample(Q, SamplingParams(seed=4), n=3)
        total = srv.log[0][2]["usage"]["completion_tokens"]
    assert [s.usage.completion_tokens for s in samples] == [len(s.tokens or ()) for s in samples]
    assert sum(s.usage.completion_tokens for s in samples) == total
    assert len({s.usage.completion_tokens for s in samples}) > 1  # really per sample, not an even split


async def test_fewer_choices_than_asked_are_completed_by_extra_requests(caplog: Any) -> None:
    with FakeOpenAIServer(max_n=2) as srv:
        async with OpenAIBackend(srv.url) as lm:
            with caplog.at_level(logging.WARNING, logger="thinktwice.lm.openai"):
                a = await lm.sample(Q, SamplingParams(seed=0), n=5)
                first_requests = srv.stats.requests
                b = await lm.sample(Q, SamplingParams(seed=0), n=5)
            stats = lm.stats
        assert len(a) == len(b) == 5 and srv.stats.choices == 10
        assert first_requests == 3  # 2 returned, then the remaining 3 as 2 + 1
        assert srv.stats.requests == 6  # the second call splits by the learned limit at once
    assert stats["n_fallbacks"] == 1
    assert sum("n not honoured" in r.message for r in caplog.records) == 1
    assert sum(s.usage.calls for s in a) == 3
    assert sum(s.usage.prompt_tokens for s in a) == 3 * a[0].usage.prompt_tokens
    assert len({s.seed for s in a}) == 5
    assert [s.text for s in a] == [s.text for s in b]  # seeds, not request shapes, fix the texts


async def test_supports_n_false_sends_one_request_per_sample() -> None:
    with FakeOpenAIServer() as srv:
        async with OpenAIBackend(srv.url, supports_n=False) as lm:
            samples = await lm.sample(Q, SamplingParams(), n=3)
        assert srv.stats.requests == 3 and len(samples) == 3
    assert not lm.capabilities.native_n and [s.usage.calls for s in samples] == [1, 1, 1]


async def test_missing_usage_is_estimated() -> None:
    with FakeOpenAIServer(include_usage=False) as srv:
        async with OpenAIBackend(srv.url) as lm:
            (with_lp,) = await lm.sample(Q, SamplingParams())
            (no_lp,) = await lm.sample(Q, SamplingParams(logprobs=False))
    assert with_lp.usage.estimated and no_lp.usage.estimated
    assert with_lp.tokens is not None and with_lp.usage.completion_tokens == len(with_lp.tokens)
    assert no_lp.usage.completion_tokens > 0 and with_lp.usage.prompt_tokens == lm.count_tokens(Q)


async def test_assistant_prefix_continues_the_turn() -> None:
    seen: list[dict[str, Any]] = []

    def handler(body: dict[str, Any]) -> str:
        seen.append(body)
        return " so 42."

    with FakeOpenAIServer(handler) as srv:
        async with OpenAIBackend(srv.url) as lm:
            (s,) = await lm.sample(Q.with_prefix("6*7 is"), SamplingParams())
        async with OpenAIBackend(srv.url, endpoint="completions") as lm2:
            await lm2.sample(Q.with_prefix("6*7 is"), SamplingParams())
    assert s.text == " so 42."
    assert seen[0]["messages"][-1] == {"role": "assistant", "content": "6*7 is"}
    assert seen[0]["continue_final_message"] is True and seen[0]["add_generation_prompt"] is False
    assert seen[1]["prompt"].endswith("assistant: 6*7 is")


async def test_params_and_extra_body_reach_the_server() -> None:
    with FakeOpenAIServer(record=True) as srv:
        async with OpenAIBackend(srv.url, extra_body={"repetition_penalty": 1.1}) as lm:
            await lm.sample(Q, SamplingParams(stop=("\n",), top_k=5, min_p=0.1, temperature=0.3, logprobs=False))
        body = srv.log[0][1]
    assert body["stop"] == ["\n"] and body["top_k"] == 5 and body["min_p"] == 0.1 and body["temperature"] == 0.3
    assert body["repetition_penalty"] == 1.1 and "logprobs" not in body and "n" not in body


async def test_api_key_rejected_raises_authentication_error_without_retries() -> None:
    with FakeOpenAIServer(api_key="right") as srv:
        async with OpenAIBackend(srv.url, api_key="wrong") as lm:
            with pytest.raises(AuthenticationError, match="key was rejected") as ei:
                await lm.sample(Q, SamplingParams())
        async with OpenAIBackend(srv.url, api_key="right") as ok:
            assert len(await ok.sample(Q, SamplingParams())) == 1
        assert srv.stats.requests == 2
    assert ei.value.status == 401 and ei.value.backend == "openai"


async def test_context_length_and_other_client_errors() -> None:
    with FakeOpenAIServer(max_context=20) as srv:
        async with OpenAIBackend(srv.url) as lm:
            with pytest.raises(ContextLengthExceeded) as ei:
                await lm.sample(Q, SamplingParams(max_tokens=100))
        async with OpenAIBackend(srv.url + "/nowhere") as bad:
            with pytest.raises(BackendError) as e404:
                await bad.sample(Q, SamplingParams(max_tokens=5))
        assert srv.stats.requests == 2
    assert ei.value.status == 400
    assert e404.value.status == 404 and not isinstance(e404.value, (RateLimited, BackendUnavailable))


async def test_unreachable_port_fails_at_once_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    lm = OpenAIBackend(url, max_retries=5, backoff_base_s=1.0)
    with pytest.raises(BackendUnavailable, match=url.replace(".", r"\.")):
        await lm.sample(Q, SamplingParams())
    assert lm.stats["requests"] == 1 and lm.stats["failures"] == 1
    await lm.aclose()


def test_registry_spec_and_reuse_across_event_loops() -> None:
    with FakeOpenAIServer() as srv:
        lm = create(f"openai:{srv.url}")
        assert isinstance(lm, OpenAIBackend) and lm.base_urls == [srv.url]
        for _ in range(2):  # a fresh loop each time, as a sync entry point does
            assert len(asyncio.run(lm.sample(Q, SamplingParams(), n=2))) == 2
        asyncio.run(lm.aclose())


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        OpenAIBackend()
    with pytest.raises(ConfigError):
        OpenAIBackend("127.0.0.1:8000")
    with pytest.raises(ConfigError):
        OpenAIBackend("http://x/v1", endpoint="embeddings")
    with pytest.raises(ConfigError):
        OpenAIBackend("http://x/v1", max_retries=-1)
    assert OpenAIBackend("http://h:1/").base_urls == ["http://h:1/v1"]
