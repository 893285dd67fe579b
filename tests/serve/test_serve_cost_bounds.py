"""One request must not stall the server or multiply its cost (the "hardening" issue): option caps, the
per-request work budget, bounded per-model state, hostile JSON, sanitised upstream errors, cancelled work
billed, and the request deadline over slow-drip streams."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.serve import ServeConfig, ServerThread
from thinktwice.serve.decide import Backends
from thinktwice.serve.errors import sanitize_upstream
from thinktwice.testing import FakeOpenAIServer

MSG = [{"role": "user", "content": "What is 6 * 7?"}]


def _metrics(srv: ServerThread) -> dict[str, float]:
    text = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines() if ln and ln[0] != "#")}


def _wait_for(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- strategy options that size work ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "param", "cap"),
    [
        ({"n": 10_000_000}, "thinktwice.n", "64"),
        ({"strategy": "adaptive-consistency", "max_samples": 10**6}, "thinktwice.max_samples", "64"),
        ({"strategy": "self-refine", "max_rounds": 10**6}, "thinktwice.max_rounds", "64"),
        ({"strategy": "usc", "aggregate_max_tokens": 10**7}, "thinktwice.aggregate_max_tokens", "4096"),
        ({"strategy": "deepconf-online", "k": 500}, "thinktwice.k", "20"),
        ({"strategy": "best-of-n", "n": "many"}, "thinktwice.n", "integer"),
    ],
)
def test_options_that_size_work_are_capped(
    make_proxy: Callable[..., ServerThread], options: dict[str, object], param: str, cap: str
) -> None:
    backend = ScriptedBackend(["The answer is 7."], cycle=True)
    srv = make_proxy(ServeConfig(strategy="self-consistency"), backend=backend)
    t0 = time.monotonic()
    r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "thinktwice": options}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param and cap in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 10 and backend.calls == []  # refused before any work
    assert httpx.get(srv.url.removesuffix("/v1") + "/health", timeout=5).status_code == 200


def test_the_work_one_request_can_cause_is_bounded(
    make_proxy: Callable[..., ServerThread], upstream: FakeOpenAIServer
) -> None:
    upstream.reset_stats()
    srv = make_proxy(upstreams=(upstream.url,), model="fake-model", strategy="self-consistency")
    body = {"prompt": [f"Q{i}: 6*7?" for i in range(200)], "n": 8, "max_tokens": 64,
            "thinktwice": {"n": 64}}
    r = httpx.post(srv.url + "/completions", json=body, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "request_budget_exceeded" and err["param"] == "prompt"
    assert "102400" in err["message"] and "512" in err["message"]  # 200 x 8 x 64 against 8 x 64
    r = httpx.post(srv.url + "/completions", json={**body, "model": "passthrough/fake-model",
                                                    "thinktwice": None}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_budget_exceeded"
    assert upstream.stats.requests == 0
    one = {"prompt": "Q: 6*7?", "n": 8, "max_tokens": 16, "thinktwice": {"n": 64}}  # the most one prompt may
    assert httpx.post(srv.url + "/completions", json=one, timeout=60).status_code == 200


# -- per-model state ---------------------------------------------------------------------------------


def test_junk_model_names_never_lock_out_legitimate_ones(
    make_proxy: Callable[..., ServerThread], upstream: FakeOpenAIServer
) -> None:
    srv = make_proxy(upstreams=(upstream.url,), model="fake-model", strategy="greedy")
    with openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0) as c:
        for i in range(20):
            c.chat.completions.create(model=f"junk-{i}", messages=MSG)
        assert c.chat.completions.create(model="another-model", messages=MSG).choices
    assert upstream.received[-1][1]["model"] == "another-model"


async def test_backends_evict_the_least_recently_used_idle_model() -> None:
    closed: list[str] = []

    class Named(ScriptedBackend):
        async def aclose(self) -> None:
            closed.append(self.model)

    backends = Backends(Named(model="default"), lambda m: Named(model=m), limit=2)
    async with backends.lease("a"):
        async with backends.lease("b"):
            pass
        async with backends.lease("c") as c:  # "b" is idle and least recent: evicted; "a" is busy
            assert c.model == "c" and closed == ["b"]
            async with backends.lease("d") as d:  # all kept ones busy: a backend of its own, closed after
                assert d.model == "d"
            assert closed == ["b", "d"] and backends.models == ["a", "c"]
    async with backends.lease(None) as default:
        assert default.model == "default"


# -- hostile JSON ---------------------------------------------------------------------------------


def test_deep_nesting_and_lone_surrogates_are_400_and_the_connection_lives(
    make_proxy: Callable[..., ServerThread],
) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy"), backend=ScriptedBackend(["The answer is 7."], cycle=True))
    deep = b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    nested = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": ' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}"
    surrogate = b'{"messages": [{"role": "user", "content": "\\ud800 broken"}]}'
    raw_surrogate = '{"messages": [{"role": "user", "content": "x"}], "user": "\ud800"}'.encode("utf-8", "surrogatepass")
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for content in (deep, nested, surrogate, raw_surrogate):
            r = c.post("/chat/completions", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_json"
        ok = c.post("/chat/completions", json={"messages": [{"role": "user", "content": "emoji \U0001f600"}]})
        assert ok.status_code == 200  # a valid surrogate pair is fine; the kept-alive connection still works


# -- upstream error bodies -------------------------------------------------------------------------


SECRET_TRACE = (
    "Internal error at http://10.1.2.3:8001/v1/chat/completions with key sk-live-ABCDEF0123456789 "
    'Traceback (most recent call last):\n  File "/srv/app/main.py", line 12, in handler\n'
    "    raise RuntimeError(password)\nRuntimeError: hunter2 " + "x" * 5000
)


@pytest.mark.parametrize(
    ("fault", "strategy", "status"),
    [("500", "passthrough", 502), ("400", "passthrough", 400), ("400", "greedy", 400)],
)
def test_upstream_error_bodies_are_truncated_and_sanitised(
    make_proxy: Callable[..., ServerThread], fault: str, strategy: str, status: int
) -> None:
    with FakeOpenAIServer(fault_script=[fault], fault_message=SECRET_TRACE) as up:
        srv = make_proxy(upstreams=(up.url,), strategy=strategy, timeout_s=5)  # greedy: via the openai backend
        r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG}, timeout=30)
        assert r.status_code == status, r.text
        msg = r.json()["error"]["message"]
        for leak in ("sk-live", "10.1.2.3", "Traceback", "main.py", "hunter2", "xxxxxxxxxx"):
            assert leak not in msg
        assert len(msg) < 600 and "Internal error" in msg


def test_sanitize_upstream_keeps_useful_text() -> None:
    ctx = "This model's maximum context length is 8 tokens. However, you requested 58 tokens."
    assert sanitize_upstream(ctx) == ctx
    auth = "auth failed: Authorization: Bearer abc.def.ghi"
    assert sanitize_upstream(auth) == "auth failed: Authorization: [redacted]"
    assert sanitize_upstream("bad \x00\x1b[31m value") == "bad [31m value"
    assert len(sanitize_upstream("word " * 1000)) == 300


# -- cancelled work is billed, and cancelled ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_cancels_the_work_and_its_tokens_are_billed(
    make_proxy: Callable[..., ServerThread], gated: Any, stream: bool
) -> None:
    backend = gated(free=2)  # two samples come back, three hang until cancelled
    cfg = ServeConfig(strategy="self-consistency", strategy_options={"n": 5})
    srv = make_proxy(cfg, backend=backend)
    body = {"messages": MSG, "stream": stream}
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=1.0) as r:
            for _ in r.iter_raw():  # a stream's first bytes come at once; then nothing until the client leaves
                pass
    assert _wait_for(lambda: backend.cancelled == 3)  # no upstream work left running for nobody
    m = _metrics(srv)
    assert m['thinktwice_upstream_tokens_total{kind="completion"}'] == 2 * 4  # the two samples spent
    assert m["thinktwice_upstream_calls_total"] == 2
    assert m["thinktwice_client_disconnects_total"] == 1
    backend.gate.set()


def test_passthrough_stream_cut_short_bills_what_was_relayed(
    make_proxy: Callable[..., ServerThread],
) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    with FakeOpenAIServer(handler=lambda body: words, per_token_latency_s=0.02) as up:
        srv = make_proxy(upstreams=(up.url,), strategy="passthrough")
        got = 0
        with httpx.stream("POST", srv.url + "/chat/completions",
                          json={"messages": MSG, "stream": True}, timeout=10) as r:
            for line in r.iter_lines():
                if '"content":"w' in line.replace(" ", ""):
                    got += 1
                if got == 10:
                    break  # the client leaves mid-stream
        assert _wait_for(lambda: _metrics(srv)['thinktwice_upstream_tokens_total{kind="completion"}'] >= 10)
        billed = _metrics(srv)['thinktwice_upstream_tokens_total{kind="completion"}']
        assert 10 <= billed <= 60


def test_the_request_deadline_bounds_a_slow_drip_stream(make_proxy: Callable[..., ServerThread]) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    with FakeOpenAIServer(handler=lambda body: words, per_token_latency_s=0.25) as up:  # 10 s in all
        srv = make_proxy(upstreams=(up.url,), strategy="passthrough", timeout_s=2.0, request_timeout_s=1.5)
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "stream": True}, timeout=30)
        took = time.monotonic() - t0
    assert took < 6  # each token came within the read timeout; the request deadline still ended it
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert '"upstream_timeout"' in events[-1]
    assert "w0" in r.text and "w39" not in r.text


def test_generated_tokens_count_against_the_keys_token_rate(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend(["one two three four five six seven eight nine ten eleven twelve"], cycle=True)
    cfg = ServeConfig(strategy="self-consistency", strategy_options={"n": 2}, api_keys=("k1", "k2"),
                      tokens_per_minute=20)
    srv = make_proxy(cfg, backend=backend)

    def post(key: str) -> httpx.Response:
        return httpx.post(srv.url + "/chat/completions", json={"messages": MSG},
                          headers={"authorization": f"Bearer {key}"}, timeout=30)

    assert post("k1").status_code == 200  # 2 samples x 12 tokens billed to k1 by the routes
    refused = post("k1")
    assert refused.status_code == 429 and "generated tokens" in refused.json()["error"]["message"]
    assert post("k2").status_code == 200
