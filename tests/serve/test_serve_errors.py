"""Every failure is an OpenAI-style JSON error with the right status, never a stack trace."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

import httpx
import openai
import pytest

from thinktwice.errors import BackendUnavailable, RateLimited
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.serve import ServeConfig, ServerThread
from thinktwice.testing import FakeOpenAIServer

MSG = [{"role": "user", "content": "What is 6 * 7?"}]


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text
    return err  # type: ignore[no-any-return]


def test_request_errors(proxy: ServerThread) -> None:
    url = proxy.url + "/chat/completions"
    err = _error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert err["code"] == "invalid_json"
    _error(httpx.post(url, json=[1, 2]), 400)
    err = _error(httpx.post(url, json={"model": "fake-model"}), 422)
    assert err["param"] == "messages"
    err = _error(httpx.post(url, json={"messages": MSG, "n": "many"}), 422)
    assert err["param"] == "n"
    err = _error(httpx.post(url, json={"messages": MSG, "n": 5}), 400)  # above max_n=4
    assert err["param"] == "n"
    err = _error(httpx.post(url, json={"messages": MSG, "thinktwice": {"strategy": "nope"}}), 400)
    assert err["code"] == "unknown_strategy" and "adaptive-consistency" in str(err["message"])
    err = _error(httpx.post(url, json={"messages": MSG, "thinktwice": {"budget_tokens": 10**9}}), 400)
    assert err["param"] == "thinktwice.budget_tokens"
    _error(httpx.get(proxy.url + "/nowhere"), 404)
    _error(httpx.get(url), 405)


def test_body_size_limit(make_proxy: Callable[..., ServerThread], upstream: FakeOpenAIServer) -> None:
    srv = make_proxy(upstreams=(upstream.url,), strategy="passthrough", max_body_bytes=2000)
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    err = _error(httpx.post(srv.url + "/chat/completions", json=big), 413)
    assert err["code"] == "request_too_large"

    def chunked() -> object:  # no content-length: the limit applies while reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    _error(httpx.post(srv.url + "/chat/completions", content=chunked()), 413)


@pytest.mark.parametrize(
    ("fault", "status"), [("429", 429), ("500", 502), ("503", 502), ("timeout", 504), ("disconnect", 502)]
)
def test_passthrough_upstream_failures(
    make_proxy: Callable[..., ServerThread], fault: str, status: int
) -> None:
    with FakeOpenAIServer(fault_script=[fault], hang_s=2.0) as up:
        srv = make_proxy(upstreams=(up.url,), strategy="passthrough", timeout_s=0.3)
        with openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0) as c:
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="m", messages=MSG)
        assert e.value.status_code == status
        assert "Traceback" not in str(e.value.body)
        if fault == "429":
            assert e.value.response.headers.get("retry-after")
        # the next request succeeds: one fault does not poison the shared client
        r = httpx.post(srv.url + "/chat/completions", json={"model": "m", "messages": MSG})
        assert r.status_code == 200


def test_upstream_unreachable_is_502(make_proxy: Callable[..., ServerThread]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = make_proxy(upstreams=(f"http://127.0.0.1:{port}/v1",), strategy="passthrough")
    _error(httpx.post(srv.url + "/chat/completions", json={"messages": MSG}), 502)


def test_upstream_client_error_is_relayed(make_proxy: Callable[..., ServerThread]) -> None:
    with FakeOpenAIServer(max_context=8) as up:
        srv = make_proxy(upstreams=(up.url,), strategy="passthrough")
        err = _error(httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "max_tokens": 50}), 400)
        assert err["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RateLimited("slow down", retry_after=2.0), 429),
        (BackendUnavailable("connection refused"), 502),
        (BackendUnavailable("upstream did not answer within 1 s (ReadTimeout)"), 504),
        (RuntimeError("a bug"), 500),
    ],
)
def test_strategy_backend_errors(
    make_proxy: Callable[..., ServerThread], error: BaseException, status: int
) -> None:
    backend = ScriptedBackend([Reply(error=error)])
    srv = make_proxy(ServeConfig(strategy="greedy"), backend=backend)
    err = _error(httpx.post(srv.url + "/chat/completions", json={"messages": MSG}), status)
    if status == 500:
        assert "a bug" not in str(err["message"])  # internals stay in the server log
    if status == 429:
        assert err["type"] == "rate_limit_error"


def test_strategy_request_timeout_is_504(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend([Reply("The answer is 1.", delay=5.0)], cycle=True)
    srv = make_proxy(ServeConfig(strategy="greedy", request_timeout_s=0.2), backend=backend)
    _error(httpx.post(srv.url + "/chat/completions", json={"messages": MSG}), 504)
    # a stream has sent its headers at once: the timeout ends it with an error event
    r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "stream": True})
    assert r.status_code == 200
    events = re.findall(r"^data: (.*)$", r.text, re.MULTILINE)
    assert events[-1] == "[DONE]" and '"timeout_error"' in events[-2] and "Traceback" not in r.text


def test_error_after_stream_started_is_an_error_event(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend(
        handler=lambda p, params, i: (
            Reply("The answer is 3.")
            if params.seed % 2 == 0
            else Reply(error=RateLimited("later"), delay=0.2)
        )
    )
    srv = make_proxy(ServeConfig(strategy="self-consistency", strategy_options={"n": 1}), backend=backend)
    r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "stream": True, "n": 2, "seed": 0})
    assert r.status_code == 200
    events = re.findall(r"^data: (.*)$", r.text, re.MULTILINE)
    assert any('"error"' in e and "rate_limit_error" in e for e in events)
    assert events[-1] == "[DONE]"


def test_a_bug_in_one_request_does_not_touch_concurrent_ones(make_proxy: Callable[..., ServerThread]) -> None:
    def handler(prompt, params, i):  # type: ignore[no-untyped-def]
        if "poison" in prompt.text():
            raise KeyError("a bug in the strategy's backend")
        return Reply("The answer is 42.", delay=0.3)

    srv = make_proxy(ServeConfig(strategy="self-consistency", strategy_options={"n": 3}),
                     backend=ScriptedBackend(handler=handler))
    import concurrent.futures

    def post(content: str) -> httpx.Response:
        return httpx.post(srv.url + "/chat/completions", json={"messages": [{"role": "user", "content": content}]},
                          timeout=30)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        good = [ex.submit(post, f"question {i}") for i in range(3)]
        bad = ex.submit(post, "poison")
        err = _error(bad.result(), 500)
        assert err["code"] == "internal_error" and "a bug" not in str(err["message"])
        for f in good:
            r = f.result()
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "The answer is 42."
    assert post("after the bug").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"index": 0, "message": "The answer is 42.", "finish_reason": "stop"}]},  # message a string
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": 42}}]},  # integer content
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}}],
         "usage": {"prompt_tokens": -5, "completion_tokens": "many"}},  # negative / non-integer usage
    ],
)
def test_a_malformed_upstream_answer_is_a_502_and_the_server_goes_on(
    make_proxy: Callable[..., ServerThread], body: dict[str, object]
) -> None:
    from thinktwice.lm.openai import OpenAIBackend

    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if b"second" in request.content:
            return httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "The answer is 42."}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5}})
        return httpx.Response(200, json=body)

    backend = OpenAIBackend("http://upstream.invalid/v1", model="m", transport=httpx.MockTransport(handler),
                            protocol_retries=1, max_retries=0)
    srv = make_proxy(ServeConfig(strategy="greedy"), backend=backend)
    err = _error(httpx.post(srv.url + "/chat/completions", json={"messages": MSG}), 502)
    assert err["code"] == "upstream_error" and 1 <= calls["n"] <= 2  # a bounded retry, then a protocol error
    ok = httpx.post(srv.url + "/chat/completions", json={"messages": [{"role": "user", "content": "second"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "The answer is 42."
