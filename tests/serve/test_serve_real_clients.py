"""What real clients send through ``thinktwice serve`` (the "real clients" issue), against the fake upstream:
temperature 0, token-id prompts and tokenizer endpoints, forwarded fields and logprobs, echo, streams that
open at once, ``models.retrieve``, exact /metrics and the ``max_tokens`` cap."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from thinktwice.lm.openai import OpenAIBackend
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.serve import ServeConfig, ServerThread
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Message, Prompt, SamplingParams

MSG = [{"role": "user", "content": "What is 6 * 7?"}]


def _metrics(srv: ServerThread) -> dict[str, float]:
    text = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines() if ln and ln[0] != "#")}


def _root(srv: ServerThread) -> str:
    return srv.url.removesuffix("/v1")


def _sampling_bodies(upstream: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [body for _, body in upstream.received]


# -- 1. temperature 0 ------------------------------------------------------------------------------


def test_temperature_zero_keeps_the_strategy_temperature(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(model="fake-model", messages=MSG, temperature=0, seed=1)
    sent = _sampling_bodies(upstream)
    assert sent and all(b["temperature"] == 0.7 for b in sent)  # never N copies of the greedy answer
    assert len({b["seed"] for b in sent}) == len(sent)
    assert r.choices[0].thinktwice["temperature"] == 0.7 and r.usage.thinktwice["temperature"] == 0.7
    upstream.reset_stats()
    r = client.chat.completions.create(model="fake-model", messages=MSG, temperature=0.9, seed=1)
    assert {b["temperature"] for b in _sampling_bodies(upstream)} == {0.9}  # above 0 it applies
    assert r.choices[0].thinktwice["temperature"] == 0.9
    for model in ("greedy/fake-model", "passthrough/fake-model"):  # the two that honour 0
        upstream.reset_stats()
        client.chat.completions.create(model=model, messages=MSG, temperature=0)
        assert [b["temperature"] for b in _sampling_bodies(upstream)] == [0]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="fake-model", messages=MSG, extra_body={"thinktwice": {"temperature": 0}}
        )
    assert e.value.body["param"] == "thinktwice.temperature" and "greedy" in e.value.body["message"]


# -- 2. token-id prompts and the tokenizer endpoints -------------------------------------------------


def test_passthrough_forwards_token_id_prompts(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    ids = upstream.encode("Q: 6*7? A:")
    r = client.completions.create(model="passthrough/fake-model", prompt=[ids, ids], max_tokens=8, n=2)
    assert len(r.choices) == 4  # two prompts x two choices, as the upstream answered
    assert upstream.received[-1][1]["prompt"] == [ids, ids]
    assert r.usage.prompt_tokens == 2 * len(ids)


def test_tokenizer_endpoints_are_forwarded(proxy: ServerThread, upstream: FakeOpenAIServer) -> None:
    root = _root(proxy)
    info = httpx.get(root + "/tokenizer_info")
    assert info.status_code == 200 and info.json()["eos_token"] == "</s>"
    tok = httpx.post(root + "/tokenize", json={"prompt": "six times seven", "model": "greedy/fake-model"}).json()
    assert tok["count"] == 3 and tok["tokens"] == upstream.encode("six times seven")
    back = httpx.post(root + "/detokenize", json={"tokens": tok["tokens"]}).json()
    assert back["prompt"] == "six times seven"
    assert httpx.post(proxy.url + "/tokenize", json={"prompt": "x"}).status_code == 200  # the /v1 alias


def test_tokenizer_endpoints_404_when_the_upstream_has_none(make_proxy: Callable[..., ServerThread]) -> None:
    with FakeOpenAIServer(tokenizer=False) as up:
        srv = make_proxy(upstreams=(up.url,), strategy="self-consistency", strategy_options={"n": 2})
        r = httpx.post(_root(srv) + "/tokenize", json={"prompt": "x"})
        assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = httpx.post(srv.url + "/completions", json={"prompt": [1, 2, 3], "max_tokens": 8})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert up.stats.completed == 0


def test_a_strategy_decodes_token_id_prompts_through_the_upstream(
    client: openai.OpenAI, upstream: FakeOpenAIServer
) -> None:
    ids = upstream.encode("Q: what is 6*7? A:")
    r = client.completions.create(model="fake-model", prompt=ids, max_tokens=32, seed=2)
    assert r.choices[0].thinktwice["samples"] == 5
    sampled = [b for p, b in upstream.received if p == "/v1/completions"]
    assert sampled and all(b["prompt"] == "Q: what is 6*7? A:" for b in sampled)


# -- 3. forwarded fields, logprobs, echo ----------------------------------------------------------------


def test_strategies_forward_every_sampling_field(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in the image?"}, image]}]
    client.chat.completions.create(
        model="fake-model",
        messages=messages,  # type: ignore[arg-type]
        response_format=fmt,  # type: ignore[arg-type]
        frequency_penalty=0.5,
        presence_penalty=-0.25,
        logit_bias={"50256": -100},
        user="user-7",
        seed=4,
        extra_body={"repetition_penalty": 1.1, "thinktwice": {"n": 3, "batch": 1}},
    )
    sent = _sampling_bodies(upstream)
    assert len(sent) == 3  # every sampling call, not just the first
    for b in sent:
        assert b["response_format"] == fmt and b["logit_bias"] == {"50256": -100} and b["user"] == "user-7"
        assert (b["frequency_penalty"], b["presence_penalty"], b["repetition_penalty"]) == (0.5, -0.25, 1.1)
        assert b["messages"] == messages and "thinktwice" not in b
    assert len({b["seed"] for b in sent}) == 3  # the request's seed seeds the decision: distinct per call
    upstream.reset_stats()
    client.chat.completions.create(model="greedy/fake-model", messages=MSG, seed=11)
    assert _sampling_bodies(upstream)[0]["seed"] == 11  # greedy keeps the client's seed itself


def test_logprobs_of_the_chosen_sample(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-model", messages=MSG, logprobs=True, top_logprobs=2, seed=3)
    c = r.choices[0]
    assert c.logprobs is not None and c.logprobs.content
    assert "".join(t.token for t in c.logprobs.content) == c.message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in c.logprobs.content)
    plain = client.chat.completions.create(model="fake-model", messages=MSG, seed=3)
    assert plain.choices[0].logprobs is None
    r2 = client.completions.create(model="fake-model", prompt="Q: 6*7? A:", max_tokens=40, logprobs=1, seed=3)
    lp = r2.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens or []) == r2.choices[0].text
    assert lp.text_offset is not None and lp.text_offset[0] == 0 and all(len(d) == 1 for d in lp.top_logprobs or [])
    chunks = list(
        client.chat.completions.create(model="fake-model", messages=MSG, logprobs=True, top_logprobs=1, seed=3,
                                       stream=True)
    )
    streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content or []]
    assert [t.token for t in streamed] == [t.token for t in c.logprobs.content]


def test_echo_and_loglikelihood_are_a_400_before_any_sampling(
    client: openai.OpenAI, upstream: FakeOpenAIServer
) -> None:
    ll = {"prompt": "The capital of France is Paris", "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fake-model", **ll)  # type: ignore[arg-type]
    assert e.value.body["param"] == "echo" and "passthrough" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fake-model", prompt="x", max_tokens=0)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fake-model", prompt="x", max_tokens=8, best_of=4)
    assert e.value.body["param"] == "best_of"
    assert upstream.stats.requests == 0  # nothing was sampled
    r = client.completions.create(
        model="fake-model", **ll, extra_body={"thinktwice": {"fallback": "passthrough"}}  # type: ignore[arg-type]
    )
    assert upstream.stats.completed == 1 and upstream.received[-1][1]["echo"] is True
    assert r.choices[0].logprobs is not None and "thinktwice" not in upstream.received[-1][1]


def test_the_embedded_backend_refuses_fields_it_cannot_honour(make_proxy: Callable[..., ServerThread]) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy"), backend=ScriptedBackend(["The answer is 7."], cycle=True))
    url = srv.url + "/chat/completions"
    image = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    r = httpx.post(url, json={"messages": [{"role": "user", "content": image}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
    r = httpx.post(url, json={"messages": MSG, "response_format": {"type": "json_object"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = httpx.post(url, json={"messages": MSG, "user": "u1", "presence_penalty": 0})  # neutral: a warning
    assert r.status_code == 200 and "presence_penalty" in r.headers["warning"] and "user" in r.headers["warning"]


def test_sampling_params_extra_is_the_seam_to_the_http_backend() -> None:
    with pytest.raises(Exception, match="cannot set n, seed"):
        SamplingParams(extra={"seed": 1, "n": 2})
    assert "extra" not in SamplingParams().to_dict()  # call-log keys of older runs are unchanged
    b = OpenAIBackend("http://127.0.0.1:9/v1", extra_body={"repetition_penalty": 1.2})
    parts = ({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}})
    prompt = Prompt(messages=(Message("user", "hi", parts),))
    params = SamplingParams(max_tokens=3, extra={"user": "u", "repetition_penalty": 1.5})
    _, body = b._body(prompt, params, chat=True)
    assert body["user"] == "u" and body["max_tokens"] == 3
    assert body["repetition_penalty"] == 1.2  # extra never overrides what the backend itself sets
    assert body["messages"][0]["content"] == list(parts)
    assert Prompt.from_dict(prompt.to_dict()) == prompt


# -- 4. streams open at once, with progress and keep-alives ---------------------------------------------


@dataclass(frozen=True)
class FastKeepAlive(ServeConfig):
    """ServeConfig with the keep-alive interval streams read (``stream_keepalive_s``)."""

    stream_keepalive_s: float = 0.05


def _events(lines: Iterator[str], until: Callable[[str], bool]) -> list[str]:
    seen = []
    for line in lines:
        if line:
            seen.append(line)
            if until(line):
                return seen
    return seen


def test_a_strategy_stream_opens_before_any_sample_and_reports_progress(
    make_proxy: Callable[..., ServerThread], gated: Any
) -> None:
    backend = gated()
    cfg = FastKeepAlive(strategy="self-consistency", strategy_options={"n": 3})
    srv = make_proxy(cfg, backend=backend)
    body = {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = _events(lines, lambda ln: ln.startswith("data:"))  # arrives while every sample is held
        assert '"role":"assistant"' in first[-1] and backend.done == 0
        assert ": keep-alive" in _events(lines, lambda ln: ln == ": keep-alive")  # nothing else to send yet
        backend.gate.set()
        rest = _events(lines, lambda ln: ln == "data: [DONE]")
    payloads = [json.loads(ln[6:]) for ln in rest if ln.startswith("data: {")]
    progress = [p["choices"][0]["thinktwice"]["progress"] for p in payloads
                if p["choices"] and "progress" in p["choices"][0].get("thinktwice", {})]
    assert progress and progress[-1]["leader"] == "7" and 1 <= progress[-1]["samples"] <= 3
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"]) == backend.text
    assert payloads[-1]["usage"]["completion_tokens"] == 3 * 4


def test_a_completions_stream_opens_at_once(make_proxy: Callable[..., ServerThread], gated: Any) -> None:
    backend = gated()
    srv = make_proxy(FastKeepAlive(strategy="self-consistency", strategy_options={"n": 2}), backend=backend)
    with httpx.stream("POST", srv.url + "/completions", json={"prompt": "Q:", "stream": True}, timeout=10) as r:
        lines = r.iter_lines()
        assert _events(lines, lambda ln: ln.startswith(":"))  # the first bytes, before any sample
        backend.gate.set()
        rest = _events(lines, lambda ln: ln == "data: [DONE]")
    assert any('"text":"The answer' in ln for ln in rest)


# -- 5. models.retrieve --------------------------------------------------------------------------------


def test_models_retrieve(client: openai.OpenAI) -> None:
    assert client.models.retrieve("fake-model").id == "fake-model"
    assert client.models.retrieve("self-consistency/fake-model").id == "self-consistency/fake-model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"


# -- 6. exact /metrics -------------------------------------------------------------------------------


def test_metrics_are_exact_for_passthrough_streams_without_include_usage(
    client: openai.OpenAI, proxy: ServerThread, upstream: FakeOpenAIServer
) -> None:
    for kind in ("chat", "completion"):
        if kind == "chat":
            chunks = list(client.chat.completions.create(model="passthrough/fake-model", messages=MSG, stream=True, n=2))
        else:
            chunks = list(client.completions.create(model="passthrough/fake-model", prompt="Q: 6*7?", stream=True,
                                                    max_tokens=30))
        assert chunks and all(c.usage is None for c in chunks)  # the usage the proxy asked for is not relayed
    client.chat.completions.create(model="fake-model", messages=MSG, stream=True).close()  # a strategy stream too
    m = _metrics(proxy)
    assert m['thinktwice_upstream_tokens_total{kind="completion"}'] == upstream.stats.completion_tokens > 0
    assert m['thinktwice_upstream_tokens_total{kind="prompt"}'] == upstream.stats.prompt_tokens > 0
    assert m["thinktwice_upstream_calls_total"] == upstream.stats.completed


# -- 7. max_tokens above the cap -----------------------------------------------------------------------


@dataclass(frozen=True)
class RefuseCap(ServeConfig):
    max_tokens_policy: str = "refuse"


def test_max_tokens_above_the_cap_is_clamped_with_a_warning(
    client: openai.OpenAI, upstream: FakeOpenAIServer, make_proxy: Callable[..., ServerThread]
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=MSG, max_tokens=100_000)
    assert "clamped" in raw.headers["warning"] and "512" in raw.headers["warning"]
    assert raw.parse().choices[0].message.content
    assert {b["max_tokens"] for b in _sampling_bodies(upstream)} == {512}
    upstream.reset_stats()
    raw = client.chat.completions.with_raw_response.create(
        model="passthrough/fake-model", messages=MSG, max_completion_tokens=100_000
    )
    assert "clamped" in raw.headers["warning"] and upstream.received[-1][1]["max_completion_tokens"] == 512
    srv = make_proxy(RefuseCap(upstreams=(upstream.url,), strategy="greedy", max_tokens=64))
    r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "max_tokens": 65})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


@pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")  # litellm's own pydantic models
def test_litellm_through_the_proxy(
    proxy: ServerThread, upstream: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    litellm = pytest.importorskip("litellm")
    r = litellm.completion(model="openai/self-consistency/fake-model", api_base=proxy.url, api_key="x",
                           messages=MSG, temperature=0, seed=1)
    assert re.search(r"4[12]", r.choices[0].message.content)
    assert r.usage.completion_tokens == upstream.stats.completion_tokens
    assert {b["temperature"] for b in _sampling_bodies(upstream)} == {0.7}
    chunks = list(litellm.completion(model="openai/self-consistency/fake-model", api_base=proxy.url, api_key="x",
                                     messages=MSG, stream=True, seed=1))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
