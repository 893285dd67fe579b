"""The proxy driven by the official ``openai`` client over real sockets, against a fake upstream."""

from __future__ import annotations

import openai
import pytest

from thinktwice.serve import ServerThread
from thinktwice.testing import FakeOpenAIServer

MSG = [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "What is 6 * 7?"}]


def test_chat_usage_sums_every_upstream_call(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(model="fake-model", messages=MSG, seed=3)
    assert len(r.choices) == 1
    assert r.choices[0].message.content.rstrip(".").endswith(("42", "41"))
    assert r.usage.prompt_tokens == upstream.stats.prompt_tokens > 0
    assert r.usage.completion_tokens == upstream.stats.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    ext = r.usage.thinktwice
    assert ext["strategy"] == "self-consistency"
    assert ext["calls"] == upstream.stats.completed
    choice = r.choices[0].thinktwice
    assert choice["samples"] == 5 == upstream.stats.choices
    assert sum(choice["votes"].values()) == pytest.approx(1.0)
    assert choice["confidence"] == pytest.approx(max(choice["votes"].values()))
    assert choice["answer"] == max(choice["votes"], key=choice["votes"].get)
    assert ext["stages"]["sample"]["completion_tokens"] == r.usage.completion_tokens


def test_n_gives_independent_decisions(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(model="fake-model", messages=MSG, n=3, seed=11)
    assert [c.index for c in r.choices] == [0, 1, 2]
    exts = [c.thinktwice for c in r.choices]
    assert all(e["samples"] == 5 for e in exts)
    assert upstream.stats.choices == 15  # three decisions of five samples each
    assert (
        sum(e["completion_tokens"] for e in exts)
        == r.usage.completion_tokens
        == upstream.stats.completion_tokens
    )
    assert sum(e["calls"] for e in exts) == r.usage.thinktwice["calls"] == upstream.stats.completed
    bodies = [body for _, body, _ in upstream.log[-3:]]
    assert len({b["seed"] for b in bodies}) == 3  # each decision drew its own samples


def test_same_seed_same_answer(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="fake-model", messages=MSG, seed=5)
    b = client.chat.completions.create(model="fake-model", messages=MSG, seed=5)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].thinktwice["votes"] == b.choices[0].thinktwice["votes"]


def test_streaming_strategy_matches_non_streaming(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    full = client.chat.completions.create(model="fake-model", messages=MSG, seed=9)
    upstream.reset_stats()
    chunks = list(
        client.chat.completions.create(
            model="fake-model", messages=MSG, seed=9, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == upstream.stats.completion_tokens
    assert chunks[-1].usage.prompt_tokens == upstream.stats.prompt_tokens


def test_streaming_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="fake-model", messages=MSG, seed=1, stream=True, n=2))
    assert all(c.usage is None for c in chunks)
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_passthrough_chat_and_stream(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(model="passthrough/fake-model", messages=MSG, seed=2, n=2)
    assert len(r.choices) == 2 and upstream.stats.completed == 1
    assert r.usage.prompt_tokens == upstream.stats.prompt_tokens
    assert r.usage.completion_tokens == upstream.stats.completion_tokens
    sent = upstream.log[-1][1]
    assert sent["model"] == "fake-model" and "thinktwice" not in sent
    chunks = list(
        client.chat.completions.create(
            model="passthrough/fake-model",
            messages=MSG,
            seed=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 3  # relayed token by token, not buffered into one chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == 0)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens


def test_tools_pass_through_untouched(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"],
                },
            },
        }
    ]
    messages = [
        {"role": "user", "content": "Add 2 and 3."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    client.chat.completions.create(
        model="passthrough/fake-model",
        messages=messages,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "text"},
    )
    sent = upstream.log[-1][1]
    assert sent["tools"] == tools and sent["messages"] == messages
    assert sent["tool_choice"] == "auto" and sent["response_format"] == {"type": "text"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="self-consistency/fake-model", messages=messages, tools=tools)
    assert e.value.body["param"] == "tools"


def test_strategy_model_prefix_routes(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(model="greedy/fake-model", messages=MSG)
    assert r.usage.thinktwice["strategy"] == "greedy"
    assert r.choices[0].thinktwice["samples"] == 1 and upstream.stats.completed == 1
    assert upstream.log[-1][1]["model"] == "fake-model"


def test_thinktwice_body_field_routes(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.chat.completions.create(
        model="fake-model",
        messages=MSG,
        seed=4,
        extra_body={"thinktwice": {"strategy": "self-consistency", "n": 3}},
    )
    assert r.choices[0].thinktwice["samples"] == 3 == upstream.stats.choices
    r = client.chat.completions.create(model="fake-model", messages=MSG, extra_body={"thinktwice": "greedy"})
    assert r.usage.thinktwice["strategy"] == "greedy"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake-model", messages=MSG, extra_body={"thinktwice": "no-such"})
    assert "self-consistency" in e.value.body["message"] and "passthrough" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="fake-model", messages=MSG, extra_body={"thinktwice": {"strategy": "greedy", "bogus": 1}}
        )
    assert "bogus" in e.value.body["message"]


def test_completions_endpoint(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    r = client.completions.create(model="fake-model", prompt="Q: 6*7? A:", max_tokens=64, n=2, seed=1)
    assert len(r.choices) == 2 and all(c.text for c in r.choices)
    assert r.usage.completion_tokens == upstream.stats.completion_tokens
    assert upstream.stats.by_path == {"/v1/completions": upstream.stats.requests}
    upstream.reset_stats()
    r = client.completions.create(model="passthrough/fake-model", prompt="Q: 6*7? A:", max_tokens=64)
    assert r.usage.prompt_tokens == upstream.stats.prompt_tokens and upstream.stats.completed == 1
    chunks = list(
        client.completions.create(model="fake-model", prompt="Q: 6*7? A:", max_tokens=64, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_models_and_multi_turn(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    ids = [m.id for m in client.models.list()]
    assert "fake-model" in ids and "self-consistency/fake-model" in ids and "passthrough/fake-model" in ids
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 6*7?"},
    ]
    client.chat.completions.create(model="greedy/fake-model", messages=turns, stop=["\n"], max_tokens=40)
    sent = upstream.log[-1][1]
    assert [m["content"] for m in sent["messages"]] == [t["content"] for t in turns]
    assert sent["stop"] == ["\n"] and sent["max_tokens"] == 40


def test_api_keys(make_proxy, upstream: FakeOpenAIServer) -> None:  # type: ignore[no-untyped-def]
    import httpx

    srv: ServerThread = make_proxy(
        upstreams=(upstream.url,),
        model="fake-model",
        strategy="greedy",
        api_keys=("k1", "k2"),
        max_concurrency=16,
    )
    with openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model="fake-model", messages=MSG)
    assert e.value.body["code"] == "invalid_api_key"
    assert httpx.get(srv.url + "/models").status_code == 401
    with openai.OpenAI(base_url=srv.url, api_key="k2", max_retries=0) as good:
        assert good.chat.completions.create(model="fake-model", messages=MSG).choices
    assert httpx.get(srv.url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def test_metrics_count_passthrough_tokens(
    client: openai.OpenAI, proxy: ServerThread, upstream: FakeOpenAIServer
) -> None:
    import httpx

    client.chat.completions.create(model="passthrough/fake-model", messages=MSG, seed=1)
    list(
        client.chat.completions.create(
            model="passthrough/fake-model",
            messages=MSG,
            seed=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = httpx.get(proxy.url.removesuffix("/v1") + "/metrics").text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(values["thinktwice_upstream_calls_total"]) == 2 == upstream.stats.completed
    assert int(values['thinktwice_upstream_tokens_total{kind="prompt"}']) == upstream.stats.prompt_tokens > 0
    assert (
        int(values['thinktwice_upstream_tokens_total{kind="completion"}']) == upstream.stats.completion_tokens
    )
