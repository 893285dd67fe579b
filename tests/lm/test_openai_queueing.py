"""OpenAIBackend against servers that queue: one request at a time to a one-slot server without
tuning, growth on a parallel one, back-off on 429, read timeouts never resent, n learnt per URL."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from thinktwice.errors import BackendUnavailable
from thinktwice.lm.concurrency import AimdConfig
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Prompt, SamplingParams

Q = Prompt.user("What is 6 times 7?")
P = SamplingParams(logprobs=False, max_tokens=32)
# Scaled-down time: a generation takes 40 ms here instead of seconds, so the noise floor is scaled too.
AIMD = AimdConfig(min_wait_s=0.01)


class SlotServer:
    """An in-process OpenAI-compatible server with ``slots`` generations at a time (None: unlimited);
    the rest wait in its queue, as llama-cpp-python's server does. It ignores ``n`` unless ``honours_n``.
    ``overflow_429`` answers 429 instead of queueing."""

    def __init__(self, slots: int | None, *, tokens: int = 20, per_token_s: float = 0.002,
                 overflow_429: bool = False, honours_n: bool = False) -> None:
        self.slots, self.tokens, self.per_token_s = slots, tokens, per_token_s
        self.overflow_429, self.honours_n = overflow_429, honours_n
        self.inside = self.peak = self.queued_arrivals = self.arrivals = 0
        self.generations = self.completion_tokens = self.rejected = 0
        self.bodies: list[dict[str, Any]] = []
        self._sem: asyncio.Semaphore | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        # MockTransport does not enforce the client's read timeout: do it here, as a socket would.
        read_s = request.extensions.get("timeout", {}).get("read")
        try:
            return await asyncio.wait_for(self._serve(request), read_s)
        except TimeoutError:
            raise httpx.ReadTimeout("timed out", request=request) from None

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots or 1_000_000)
        body = json.loads(request.content)
        self.bodies.append(body)
        self.arrivals += 1
        if self.slots is not None and self.inside >= self.slots:
            if self.overflow_429:
                self.rejected += 1
                return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "busy"}})
            self.queued_arrivals += 1
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            async with self._sem:
                k = int(body.get("n", 1)) if self.honours_n else 1
                await asyncio.sleep(self.tokens * self.per_token_s)
                self.generations += k
                self.completion_tokens += k * self.tokens
        finally:
            self.inside -= 1
        choices = [{"index": i, "message": {"role": "assistant", "content": "The answer is 42."},
                    "finish_reason": "stop"} for i in range(k)]
        return httpx.Response(200, json={"choices": choices, "model": "slot", "usage": {
            "prompt_tokens": 7, "completion_tokens": k * self.tokens, "total_tokens": 7 + k * self.tokens}})


def _backend(server: SlotServer, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend("http://slot.test/v1", transport=httpx.MockTransport(server.handle), backoff_base_s=0.001,
                         backoff_max_s=0.005, **kw)


async def test_a_one_slot_server_gets_one_request_at_a_time_without_tuning() -> None:
    srv = SlotServer(slots=1)
    async with _backend(srv, max_concurrency=8, aimd=AIMD) as lm:
        out = await asyncio.gather(*[lm.sample(Q, P) for _ in range(40)])
        ep = lm.stats["endpoints"]["http://slot.test/v1"]
    assert srv.generations == 40 == sum(s.usage.calls for r in out for s in r)  # nothing served twice
    assert sum(s.usage.completion_tokens for r in out for s in r) == srv.completion_tokens
    # Without adaptation all 8 would sit in the server's queue (7 of every 8 arrivals queued).
    assert srv.queued_arrivals / srv.arrivals < 0.3, (srv.queued_arrivals, srv.arrivals)
    assert ep["decreases"] >= 1 and ep["limit"] <= 2 and ep["queued_rounds"] >= 1


async def test_a_fixed_limit_floods_the_same_server() -> None:
    srv = SlotServer(slots=1)
    async with _backend(srv, max_concurrency=8, adaptive_concurrency=False) as lm:
        await asyncio.gather(*[lm.sample(Q, P) for _ in range(16)])
    assert srv.peak == 8 and srv.queued_arrivals >= 12  # the control: what adaptation prevents


async def test_a_parallel_server_is_given_the_full_concurrency() -> None:
    srv = SlotServer(slots=None)
    async with _backend(srv, max_concurrency=8, aimd=AIMD) as lm:
        await asyncio.gather(*[lm.sample(Q, P) for _ in range(60)])
        ep = lm.stats["endpoints"]["http://slot.test/v1"]
    assert srv.peak == 8 and ep["limit"] == 8 and ep["decreases"] == 0


async def test_429s_shrink_the_limit_instead_of_hammering() -> None:
    adaptive, fixed = SlotServer(slots=2, overflow_429=True), SlotServer(slots=2, overflow_429=True)
    async with _backend(adaptive, max_concurrency=8, aimd=AIMD, max_retries=50) as lm:
        await asyncio.gather(*[lm.sample(Q, P) for _ in range(40)])
        ep = lm.stats["endpoints"]["http://slot.test/v1"]
    async with _backend(fixed, max_concurrency=8, adaptive_concurrency=False, max_retries=50) as lm:
        await asyncio.gather(*[lm.sample(Q, P) for _ in range(40)], return_exceptions=True)
    assert adaptive.generations == 40
    assert ep["overloads"] == adaptive.rejected and ep["limit"] <= 2
    assert adaptive.rejected * 4 < fixed.rejected, (adaptive.rejected, fixed.rejected)


async def test_a_read_timeout_is_not_resent_by_default() -> None:
    with FakeOpenAIServer(fault_script=["timeout"]) as srv:
        async with OpenAIBackend(srv.url, timeout_s=0.3, backoff_base_s=0.001) as lm:
            with pytest.raises(BackendUnavailable, match="not resent") as ei:
                await lm.sample(Q, P)
            requests = srv.stats.requests
            ep = lm.stats["endpoints"][srv.url.rstrip("/")]
    assert requests == 1 and "gave up after 1 attempt)" in str(ei.value)
    assert ep["overloads"] == 1 and lm.stats["retries"] == {}


async def test_the_default_read_timeout_fits_a_generation() -> None:
    lm = OpenAIBackend("http://127.0.0.1:9/v1")
    assert lm.timeout_s == 600.0 and lm.timeout_retries == 0
    lm._ensure()
    assert lm._clients[0].timeout.read == 600.0 and lm._clients[0].timeout.connect == 10.0
    await lm.aclose()


async def test_a_queued_request_waits_client_side_not_on_the_server_clock() -> None:
    # 12 generations of 40 ms on one slot take ~0.5 s in all; each request's own read timeout is 0.2 s.
    # Queued on the server (fixed limit 6) the later ones pass it; queued here they do not.
    srv, flooded = SlotServer(slots=1), SlotServer(slots=1)
    async with _backend(srv, max_concurrency=6, timeout_s=0.2, aimd=AimdConfig(min_wait_s=0.01, max_hold_rounds=64)
                        ) as lm:
        out = await asyncio.gather(*[lm.sample(Q, P) for _ in range(12)], return_exceptions=True)
    assert all(isinstance(r, list) for r in out), [r for r in out if not isinstance(r, list)][:2]
    assert srv.generations == 12
    async with _backend(flooded, max_concurrency=6, timeout_s=0.2, adaptive_concurrency=False) as lm:
        out = await asyncio.gather(*[lm.sample(Q, P) for _ in range(12)], return_exceptions=True)
    assert any(isinstance(r, BackendUnavailable) and "not resent" in str(r) for r in out)  # the control


async def test_n_support_is_learnt_once_per_endpoint(caplog: Any) -> None:
    ignores, honours = SlotServer(slots=None, honours_n=False), SlotServer(slots=None, honours_n=True)

    async def route(request: httpx.Request) -> httpx.Response:
        return await (ignores if request.url.host == "a.test" else honours).handle(request)

    urls = ["http://a.test/v1", "http://b.test/v1"]
    async with OpenAIBackend(urls, transport=httpx.MockTransport(route), aimd=AIMD) as lm:
        with caplog.at_level(logging.WARNING, logger="thinktwice.lm.openai"):
            out = [await lm.sample(Q, P, n=4) for _ in range(6)]
        eps = lm.stats["endpoints"]
        assert lm.capabilities.native_n  # b still takes n
    assert all(len(r) == 4 for r in out)
    assert eps[urls[0]]["n_cap"] == 1 and eps[urls[1]]["n_cap"] is None
    assert sum("n not honoured" in r.message for r in caplog.records) == 1
    first = next(i for i, b in enumerate(ignores.bodies) if b.get("n", 1) > 1)
    assert all("n" not in b for b in ignores.bodies[first + 1:])  # a.test is never asked for n again
    assert sum(b.get("n", 1) > 1 for b in honours.bodies) >= 2  # b.test still is, after a.test was learnt
    assert ignores.generations + honours.generations == 24


async def test_a_server_that_ignores_n_is_no_longer_reported_native() -> None:
    srv = SlotServer(slots=1)
    async with _backend(srv, aimd=AIMD) as lm:
        assert lm.capabilities.native_n
        out = await lm.sample(Q, P, n=3)
        assert not lm.capabilities.native_n
        again = await lm.sample(Q, P, n=3)
    assert len(out) == len(again) == 3 and srv.generations == 6
    assert [b.get("n") for b in srv.bodies] == [3, None, None, None, None, None]
