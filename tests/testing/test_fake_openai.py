"""FakeOpenAIServer speaks enough of the OpenAI API for clients (httpx and the openai SDK) and injects faults."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from thinktwice.errors import ConfigError
from thinktwice.testing import FakeOpenAIServer, fake_tokenize

CHAT = {"messages": [{"role": "user", "content": "What is 6 times 7?"}]}


def test_chat_default_answers_follow_the_distribution_and_seed_is_reproducible() -> None:
    with FakeOpenAIServer(answers={"42": 0.5, "41": 0.5}) as srv:
        r = httpx.post(srv.url + "/chat/completions", json={**CHAT, "n": 40, "seed": 3})
        r2 = httpx.post(srv.url + "/chat/completions", json={**CHAT, "n": 40, "seed": 3})
        r3 = httpx.post(srv.url + "/chat/completions", json={**CHAT, "n": 40, "seed": 4})
    texts = [c["message"]["content"] for c in r.json()["choices"]]
    assert len(texts) == 40
    finals = {t.rsplit(" ", 1)[-1] for t in texts}
    assert finals == {"42.", "41."}
    assert texts == [c["message"]["content"] for c in r2.json()["choices"]]
    assert texts != [c["message"]["content"] for c in r3.json()["choices"]]


def test_usage_counts_word_tokens_and_cached_tokens() -> None:
    with FakeOpenAIServer(handler=lambda body: "one two three", cached_tokens=2) as srv:
        j = httpx.post(srv.url + "/chat/completions", json={**CHAT, "n": 2}).json()
        assert srv.stats.completion_tokens == 6
    prompt_tokens = 1 + len(fake_tokenize(CHAT["messages"][0]["content"]))
    assert j["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 6, "total_tokens": prompt_tokens + 6,
                          "prompt_tokens_details": {"cached_tokens": 2}}


def test_max_tokens_stop_max_n_and_no_usage() -> None:
    with FakeOpenAIServer(handler=lambda body, i: f"a b c d e {i}", max_n=2, include_usage=False) as srv:
        j = httpx.post(srv.url + "/completions", json={"prompt": "x", "n": 3, "max_tokens": 3}).json()
        j2 = httpx.post(srv.url + "/completions", json={"prompt": "x", "stop": [" c"]}).json()
    assert [c["text"] for c in j["choices"]] == ["a b c", "a b c"]
    assert {c["finish_reason"] for c in j["choices"]} == {"length"}
    assert "usage" not in j
    assert j2["choices"][0]["text"] == "a b" and j2["choices"][0]["finish_reason"] == "stop"


def test_logprobs_formats_are_consistent() -> None:
    with FakeOpenAIServer() as srv:
        chat = httpx.post(srv.url + "/chat/completions",
                          json={**CHAT, "logprobs": True, "top_logprobs": 3, "seed": 1}).json()
        comp = httpx.post(srv.url + "/completions", json={"prompt": "x", "logprobs": 3, "seed": 1,
                                                          "max_tokens": 50}).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == chat["choices"][0]["message"]["content"]
    for e in content:
        assert len(e["top_logprobs"]) == 3
        assert e["logprob"] in [t["logprob"] for t in e["top_logprobs"]]
        assert sum(math.exp(t["logprob"]) for t in e["top_logprobs"]) <= 1.0 + 1e-9
    lp = comp["choices"][0]["logprobs"]
    assert lp["tokens"] == [e["token"] for e in content]  # same seed, same text and values
    assert lp["token_logprobs"] == [e["logprob"] for e in content]


def test_streaming_chat_reassembles_to_the_same_text_with_usage() -> None:
    with FakeOpenAIServer() as srv:
        full = httpx.post(srv.url + "/chat/completions", json={**CHAT, "seed": 9}).json()
        events = []
        with httpx.stream("POST", srv.url + "/chat/completions",
                          json={**CHAT, "seed": 9, "stream": True, "stream_options": {"include_usage": True}}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == full["usage"]


def test_openai_sdk_talks_to_it() -> None:
    openai = pytest.importorskip("openai")
    with FakeOpenAIServer(api_key="k") as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0)
        r = client.chat.completions.create(model="m", messages=CHAT["messages"], n=2)
        assert len(r.choices) == 2 and r.usage is not None and r.usage.completion_tokens > 0
        stream = client.chat.completions.create(model="m", messages=CHAT["messages"], stream=True)
        assert "answer" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url, api_key="bad", max_retries=0).models.list()
        client.close()


def test_scripted_faults_and_retry_after() -> None:
    with FakeOpenAIServer(fault_script=["429", "503", "500", "truncate", "disconnect"]) as srv:
        with httpx.Client() as c:
            r = c.post(srv.url + "/chat/completions", json=CHAT)
            assert r.status_code == 429 and float(r.headers["retry-after"]) > 0
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            r = c.post(srv.url + "/chat/completions", json=CHAT)
            assert r.status_code == 503 and "retry-after" in r.headers
            assert c.post(srv.url + "/chat/completions", json=CHAT).status_code == 500
            r = c.post(srv.url + "/chat/completions", json=CHAT)
            with pytest.raises(json.JSONDecodeError):
                r.json()
            with pytest.raises(httpx.RemoteProtocolError):
                c.post(srv.url + "/chat/completions", json=CHAT)
            assert c.post(srv.url + "/chat/completions", json=CHAT).status_code == 200
        assert srv.stats.faults == {"429": 1, "503": 1, "500": 1, "truncate": 1, "disconnect": 1}
        assert srv.stats.completed == 1


def test_timeout_fault_hangs_and_stop_releases_it() -> None:
    with FakeOpenAIServer(fault_script=["timeout"]) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/chat/completions", json=CHAT, timeout=0.2)
        assert httpx.post(srv.url + "/chat/completions", json=CHAT).status_code == 200


def test_random_faults_are_seeded() -> None:
    def run(seed: int) -> dict[str, int]:
        with FakeOpenAIServer(fault_rate=0.5, faults=("429", "500"), seed=seed) as srv:
            with httpx.Client() as c:
                for _ in range(30):
                    c.post(srv.url + "/chat/completions", json=CHAT)
            return dict(srv.stats.faults)

    a = run(1)
    assert 0 < sum(a.values()) < 30
    assert a == run(1)


def test_auth_context_length_and_bad_input() -> None:
    with FakeOpenAIServer(api_key="secret", max_context=10) as srv:
        assert httpx.post(srv.url + "/chat/completions", json=CHAT).status_code == 401
        h = {"Authorization": "Bearer secret"}
        r = httpx.post(srv.url + "/chat/completions", json={**CHAT, "max_tokens": 50}, headers=h)
        assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
        assert httpx.post(srv.url + "/chat/completions", content=b"{nope", headers=h).status_code == 400
        assert httpx.get(srv.url + "/nothing", headers=h).status_code == 404
    with pytest.raises(ConfigError):
        FakeOpenAIServer(faults=("boom",))
