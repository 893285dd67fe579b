"""Malformed upstream answers: each is an UpstreamProtocolError after a few resends (never a TypeError,
KeyError or ValueError), tolerated absences stay tolerated, and eval records such a problem as failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import BackendError, UpstreamProtocolError
from thinktwice.eval.runner import evaluate
from thinktwice.eval.store import RunStore
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.registry import tasks
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.types import Prompt, Sample, SamplingParams

Q = Prompt.user("What is 6 times 7?")
RAW = Prompt(raw="6 * 7 =")
LP = SamplingParams(seed=0, top_logprobs=2)

GOOD_CHAT: dict[str, Any] = {
    "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "It is 42."},
                 "logprobs": {"content": [
                     {"token": "It", "logprob": -0.5, "top_logprobs": [{"token": "It", "logprob": -0.5},
                                                                       {"token": "The", "logprob": -1.5}]},
                     {"token": " is 42.", "logprob": -0.1, "top_logprobs": []}]}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
              "prompt_tokens_details": {"cached_tokens": 3}},
}
GOOD_COMPLETION: dict[str, Any] = {
    "choices": [{"index": 0, "text": " 42", "finish_reason": "length",
                 "logprobs": {"tokens": [" 4", "2"], "token_logprobs": [-0.2, None],
                              "top_logprobs": [{" 4": -0.2, " 5": -2.0}, None]}}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2},
}


class Upstream:
    """A MockTransport answering every request with ``answer(i)`` (status, body bytes); counts requests."""

    def __init__(self, answer: Callable[[int], tuple[int, bytes]]) -> None:
        self.answer, self.requests = answer, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status, body = self.answer(self.requests)
        self.requests += 1
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})


def _backend(up: Upstream, **kw: Any) -> OpenAIBackend:
    opts: dict[str, Any] = {"backoff_base_s": 0.0, "backoff_max_s": 0.0, "health_path": None, **kw}
    return OpenAIBackend("http://up.test/v1", transport=httpx.MockTransport(up), **opts)


def _bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


async def _sample(body: Any, prompt: Prompt = Q, params: SamplingParams = LP, n: int = 1,
                  status: int = 200, **kw: Any) -> tuple[list[Sample], Upstream]:
    up = Upstream(lambda i: (status, _bytes(body)))
    async with _backend(up, **kw) as lm:
        return await lm.sample(prompt, params, n=n), up


def _chat(**choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "stop", **choice}]}


MALFORMED: dict[str, Any] = {
    "message is a string": _chat(message="It is 42."),
    "content is an integer": _chat(message={"content": 42}),
    "content parts without text": _chat(message={"content": [{"type": "image_url"}]}),
    "negative usage": {**GOOD_CHAT, "usage": {"prompt_tokens": 9, "completion_tokens": -5}},
    "string usage": {**GOOD_CHAT, "usage": {"prompt_tokens": "9", "completion_tokens": 2}},
    "fractional usage": {**GOOD_CHAT, "usage": {"prompt_tokens": 9, "completion_tokens": 2.5}},
    "boolean usage": {**GOOD_CHAT, "usage": {"prompt_tokens": 9, "completion_tokens": True}},
    "absurd usage": {**GOOD_CHAT, "usage": {"prompt_tokens": 9, "completion_tokens": 10**30}},
    "usage is a list": {**GOOD_CHAT, "usage": [9, 2]},
    "more cached than prompt": {**GOOD_CHAT, "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                                       "prompt_tokens_details": {"cached_tokens": 5}}},
    "choices is an object": {"choices": {"0": {"message": {"content": "x"}}}},
    "no choices": {"choices": []},
    "a choice is a number": {"choices": [7]},
    "finish_reason is a number": _chat(message={"content": "x"}, finish_reason=1),
    "logprob above zero": _chat(message={"content": "x"}, logprobs={"content": [{"token": "x", "logprob": 3.0}]}),
    "logprob is text": _chat(message={"content": "x"}, logprobs={"content": [{"token": "x", "logprob": "-1"}]}),
    "logprob entry without token": _chat(message={"content": "x"}, logprobs={"content": [{"logprob": -1.0}]}),
    "logprobs content is an object": _chat(message={"content": "x"}, logprobs={"content": {"token": "x"}}),
    "top_logprobs is an object": _chat(message={"content": "x"}, logprobs={"content": [
        {"token": "x", "logprob": -1.0, "top_logprobs": {"x": -1.0}}]}),
    "body is a list": [GOOD_CHAT],
    "body is a string": "ok",
    "invalid JSON": b'{"choices": [',
    "not UTF-8": b'{"choices": "\xff\xfe"}',
    "NaN logprob": b'{"choices": [{"message": {"content": "x"}, "logprobs": {"content": '
                   b'[{"token": "x", "logprob": NaN}]}}]}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_answer_is_an_upstream_protocol_error_after_a_few_resends(case: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="malformed response.*gave up after 3 attempts") as ei:
        await _sample(MALFORMED[case], protocol_retries=2)
    assert ei.value.backend == "openai" and ei.value.status == 200


MALFORMED_COMPLETIONS: dict[str, Any] = {
    "text is a number": {"choices": [{"text": 42}]},
    "token and logprob lists differ": {"choices": [{"text": "x", "logprobs": {"tokens": ["x", "y"],
                                                                                "token_logprobs": [-1.0]}}]},
    "top_logprobs entry is a list": {"choices": [{"text": "x", "logprobs": {
        "tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [["x", -1.0]]}}]},
    "a token is a number": {"choices": [{"text": "x", "logprobs": {"tokens": [1], "token_logprobs": [-1.0]}}]},
}


@pytest.mark.parametrize("case", list(MALFORMED_COMPLETIONS))
async def test_malformed_completions_answers_too(case: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="malformed response"):
        await _sample(MALFORMED_COMPLETIONS[case], prompt=RAW, protocol_retries=0)


async def test_one_malformed_answer_is_resent_and_the_next_one_used() -> None:
    up = Upstream(lambda i: (200, _bytes(_chat(message="oops") if i == 0 else GOOD_CHAT)))
    async with _backend(up) as lm:
        (s,) = await lm.sample(Q, LP)
        stats = lm.stats
    assert s.text == "It is 42." and up.requests == 2
    assert stats["retries"] == {"invalid-body": 1} and stats["calls"] == 1 and stats["failures"] == 0


async def test_the_well_formed_answers_still_parse() -> None:
    (s,), _ = await _sample(GOOD_CHAT)
    assert s.text == "It is 42." and s.finish_reason == "stop" and s.model == "m"
    assert s.usage.prompt_tokens == 9 and s.usage.cached_prompt_tokens == 3 and s.usage.completion_tokens == 2
    assert s.tokens is not None and [t.token for t in s.tokens] == ["It", " is 42."]
    assert s.tokens[0].top == (("It", -0.5), ("The", -1.5))
    (c,), _ = await _sample(GOOD_COMPLETION, prompt=RAW)
    assert c.text == " 42" and c.finish_reason == "length" and c.tokens is not None
    assert c.tokens[0].top == ((" 4", -0.2), (" 5", -2.0)) and c.tokens[1].top == ()
    assert c.tokens[1].logprob != c.tokens[1].logprob  # null logprob: NaN, as before


async def test_absent_optional_fields_are_tolerated() -> None:
    (s,), _ = await _sample({"choices": [{"message": {"content": None}, "finish_reason": None}]})
    assert s.text == "" and s.finish_reason == "stop" and s.tokens is None and s.usage.estimated
    (parts,), _ = await _sample(_chat(message={"content": [{"type": "text", "text": "It is "},
                                                             {"type": "text", "text": "42."}]}))
    assert parts.text == "It is 42."
    (whole,), _ = await _sample({**GOOD_CHAT, "usage": {"prompt_tokens": 9.0, "completion_tokens": 2.0}})
    assert whole.usage.completion_tokens == 2 and not whole.usage.estimated
    (no_prompt,), _ = await _sample({**GOOD_CHAT, "usage": {"completion_tokens": 2}})
    assert no_prompt.usage.completion_tokens == 2 and no_prompt.usage.estimated and no_prompt.usage.prompt_tokens > 0
    (odd_model,), _ = await _sample({**GOOD_CHAT, "model": 5})
    assert odd_model.model == "default"
    two, _ = await _sample({"choices": [{"index": "b", "message": {"content": "one"}},
                                        {"index": "a", "message": {"content": "two"}}]}, n=2)
    assert [x.text for x in two] == ["one", "two"]  # indices that are not integers: server order


@pytest.mark.parametrize("status", [400, 500])
async def test_error_answers_with_odd_bodies_keep_their_error_class(status: int) -> None:
    for body in (b"[" * 100_000, b'{"error": ["x"]}', b'{"error": {"message": {"a": 1}}}', b"\xff"):
        with pytest.raises(BackendError) as ei:
            await _sample(body, status=status, max_retries=0)
        assert ei.value.status == status and not isinstance(ei.value, UpstreamProtocolError)


async def test_list_models_with_a_malformed_body_is_a_backend_error() -> None:
    for body in (b"[1]", b'{"data": 5}', b"[" * 100_000):
        async with _backend(Upstream(lambda i, b=body: (200, b))) as lm:
            with pytest.raises(BackendError, match="could not list"):
                await lm.list_models()
    async with _backend(Upstream(lambda i: (200, b'{"data": [{"id": "a"}, {"id": 3}, "b"]}'))) as lm:
        assert await lm.list_models() == ["a"]


async def test_eval_records_a_malformed_upstream_as_a_failed_problem(tmp_path: Any) -> None:
    task = tasks.create("gsm8k")
    problems = task.load("test", limit=2)
    up = Upstream(lambda i: (200, _bytes(_chat(message="The answer is 42."))))
    with RunStore(tmp_path / "r.db") as store:
        rid = store.create_run(kind="eval", config={})
        store.put_problems(rid, problems)
        async with _backend(up, protocol_retries=1) as lm:
            with pytest.raises(BackendError, match="every problem failed; first error: UpstreamProtocolError"):
                await evaluate(task, SelfConsistency(n=2), lm, problems, store=store, run_id=rid)
        events = [(kind, detail) for _, kind, detail in store.events(rid)]
    assert up.requests == 2 * len(problems)  # each problem: the first answer and one resend
    assert [k for k, _ in events] == ["problem-failed"] * len(problems)


# -- property tests: whatever the upstream sends, the backend raises only BackendError -------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["choices", "usage", "model", "message", "content", "text", "finish_reason", "index", "logprobs",
          "token", "logprob", "top_logprobs", "tokens", "token_logprobs", "prompt_tokens", "completion_tokens",
          "prompt_tokens_details", "cached_tokens", "role", "n"]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


def _check(result: list[Sample] | BaseException) -> None:
    if isinstance(result, BaseException):
        assert isinstance(result, BackendError), repr(result)
        return
    for s in result:
        assert isinstance(s.text, str) and isinstance(s.finish_reason, str) and isinstance(s.model, str)
        u = s.usage
        assert all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (u.calls, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens))
        assert u.cached_prompt_tokens <= max(u.prompt_tokens, 0) or u.calls == 0
        for t in s.tokens or ():
            assert isinstance(t.token, str) and isinstance(t.logprob, float)
            assert all(isinstance(a, str) and isinstance(v, float) and v <= 1e-3 for a, v in t.top)


def _run(body: bytes, prompt: Prompt, n: int, status: int = 200) -> list[Sample] | BaseException:
    up = Upstream(lambda i: (status, body))

    async def go() -> list[Sample]:
        async with _backend(up, max_retries=1, protocol_retries=1, approx_stats=True) as lm:
            return await lm.sample(prompt, LP, n=n)

    try:
        return asyncio.run(go())
    except Exception as e:  # noqa: BLE001 (what it raises is what the property is about)
        return e


@settings(deadline=None, max_examples=150)
@given(doc=st.sampled_from([GOOD_CHAT, GOOD_COMPLETION]), data=st.data(), new=json_values,
       delete=st.booleans(), n=st.integers(1, 3))
def test_any_mutation_of_a_good_answer_yields_samples_or_a_backend_error(
        doc: dict[str, Any], data: st.DataObject, new: Any, delete: bool, n: int) -> None:
    path = data.draw(st.sampled_from(_paths(doc)))
    body = json.dumps(_mutate(doc, path, new, delete)).encode()
    _check(_run(body, Q if doc is GOOD_CHAT else RAW, n))


@settings(deadline=None, max_examples=150)
@given(value=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6) | json_values,
       raw=st.booleans(), status=st.sampled_from([200, 200, 200, 400, 429, 500]))
def test_any_json_body_yields_samples_or_a_backend_error(value: Any, raw: bool, status: int) -> None:
    _check(_run(json.dumps(value).encode(), RAW if raw else Q, 2, status))


@settings(deadline=None, max_examples=100)
@given(body=st.binary(max_size=64))
def test_any_bytes_yield_a_backend_error(body: bytes) -> None:
    result = _run(body, Q, 1)
    _check(result)
