"""Routing precedence, the generic answer format, metrics exposition and scripted-backend decisions."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import openai
import pytest

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.serve import ServeConfig, ServerThread
from thinktwice.serve.answer_format import GenericAnswerFormat
from thinktwice.serve.decide import resolve
from thinktwice.serve.errors import ProxyError
from thinktwice.serve.schemas import ThinktwiceOptions
from thinktwice.serve.streaming import text_pieces

CFG = ServeConfig(strategy="self-consistency", strategy_options={"n": 4}, model="base", budget_tokens=1000)


def test_resolve_precedence() -> None:
    r = resolve(None, None, CFG)
    assert (r.strategy, r.model, dict(r.options), r.budget_tokens) == (
        "self-consistency",
        "base",
        {"n": 4},
        1000,
    )
    r = resolve("greedy/other", None, CFG)
    assert (r.strategy, r.model, dict(r.options)) == ("greedy", "other", {})
    r = resolve("meta-llama/Llama-3", None, CFG)  # not a strategy prefix: the whole name is the model
    assert (r.strategy, r.model) == ("self-consistency", "meta-llama/Llama-3")
    r = resolve("best-of-n:self-certainty/m", None, CFG)
    assert (r.strategy, r.model) == ("best-of-n:self-certainty", "m")
    r = resolve("greedy/m", ThinktwiceOptions(strategy="self-consistency", n=2, budget_tokens=10), CFG)
    assert (r.strategy, r.model, dict(r.options), r.budget_tokens) == ("self-consistency", "m", {"n": 2}, 10)
    r = resolve("passthrough", None, CFG)
    assert r.passthrough and r.model == "base"
    with pytest.raises(ProxyError) as e:
        resolve(None, "nope", CFG)
    assert e.value.status == 400 and "greedy" in e.value.message


def test_generic_answer_format() -> None:
    f = GenericAnswerFormat()
    assert f.extract("First 6*7 = 42.\n#### 42") == "42"
    assert f.extract("So it is \\boxed{\\frac{1}{2}}") == f.canonical("0.5")
    assert f.extract("The answer is 1,000.") == "1000"
    assert f.extract("I counted 3 then 12 apples") == "12"
    assert f.extract("The answer is Paris.") == f.extract("paris") == "paris"
    assert f.extract("   ") is None
    assert f.equivalent("0.5", "1/2") and not f.equivalent("2", "3")


def test_text_pieces_join_back() -> None:
    text = "Let me think.\n\nFirst  we add 2 and 3, then   multiply. The answer is 42."
    pieces = text_pieces(text)
    assert "".join(pieces) == text and len(pieces) > 2


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_]+="[^"]*",?)*\})? (-?[0-9.e+]+|\+Inf)$')


def _metrics(srv: ServerThread) -> dict[str, float]:
    text = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            assert line.startswith(("# HELP ", "# TYPE ")) or not line
            continue
        m = _SAMPLE.match(line)
        assert m, line
        values[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return values


def test_metrics_and_scripted_backend(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend(["The answer is 7.", "It is 7", "The answer is 8."], cycle=True)
    srv = make_proxy(ServeConfig(strategy="self-consistency", strategy_options={"n": 3}), backend=backend)
    with openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0) as c:
        r = c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "3+4?"}], n=2)
    assert [ch.thinktwice["answer"] for ch in r.choices] == ["7", "7"]
    assert r.choices[0].thinktwice["votes"] == pytest.approx({"7": 2 / 3, "8": 1 / 3})
    assert r.choices[0].message.content in ("The answer is 7.", "It is 7")
    httpx.get(srv.url + "/missing")
    m = _metrics(srv)
    assert m['thinktwice_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 1
    assert m['thinktwice_requests_total{endpoint="other",status="404"}'] == 1
    assert m['thinktwice_decisions_total{strategy="self-consistency"}'] == 2
    assert m["thinktwice_upstream_calls_total"] == r.usage.thinktwice["calls"] == len(backend.calls)
    assert m['thinktwice_upstream_tokens_total{kind="completion"}'] == r.usage.completion_tokens
    assert m['thinktwice_request_duration_seconds_count{endpoint="/v1/chat/completions"}'] == 1
    assert m['thinktwice_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}'] == 1


def test_embedded_passthrough_is_one_plain_sample(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend(["Paris."], cycle=True)
    srv = make_proxy(ServeConfig(strategy="passthrough"), backend=backend)
    r = httpx.post(
        srv.url + "/chat/completions",
        json={"messages": [{"role": "user", "content": "Capital of France?"}], "temperature": 0.3},
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "Paris."
    assert len(backend.calls) == 1 and backend.calls[0][1].temperature == 0.3


def test_samples_per_decision_are_capped(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend(["The answer is 7."], cycle=True)
    # the server's own options are trusted, and bounded by the per-decision budget
    cfg = ServeConfig(strategy="self-consistency", strategy_options={"n": 1000}, max_samples=6)
    srv = make_proxy(cfg, backend=backend)
    r = httpx.post(srv.url + "/chat/completions", json={"messages": [{"role": "user", "content": "3+4?"}]})
    ext = r.json()["choices"][0]["thinktwice"]
    assert r.status_code == 200 and ext["samples"] == 6 and ext["stopped_because"] == "budget"
    assert sum(n for _, _, n in backend.calls) == 6
    # a client's option above the cap is refused before any sampling (test_serve_limits.py)
    r = httpx.post(
        srv.url + "/chat/completions",
        json={"messages": [{"role": "user", "content": "3+4?"}], "thinktwice": {"n": 1000}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "thinktwice.n"
    assert sum(n for _, _, n in backend.calls) == 6
