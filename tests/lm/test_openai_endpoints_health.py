"""Health checks of endpoints coming back from a cool-down, and per-endpoint rate limits (issue 12)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.endpoints import EndpointPool
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Prompt, SamplingParams

Q = Prompt.user("What is 6 times 7?")
P = SamplingParams(logprobs=False, max_tokens=8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_books_slots_at_the_configured_rate() -> None:
    clock = Clock()
    pool = EndpointPool(["http://a/v1"], rps=2.0, burst=2, clock=clock)
    ep = pool.endpoints[0]
    assert [pool.reserve(ep) for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    clock.t += 1.0  # two tokens refilled, both already booked by the queued requests
    assert pool.reserve(ep) == pytest.approx(0.5)
    clock.t += 10.0  # the bucket refills to its size, no more
    assert [pool.reserve(ep) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert ep.throttled == 4 and pool.to_dict()["http://a/v1"]["throttled"] == 4


def test_pick_prefers_the_endpoint_whose_next_slot_comes_first() -> None:
    clock = Clock()
    pool = EndpointPool(["http://a/v1", "http://b/v1"], rps=1.0, clock=clock)
    a, b = pool.endpoints
    pool.reserve(a)
    pool.reserve(a)  # a is booked 1 s ahead, b is free
    assert all(pool.pick() is b for _ in range(3))


def test_without_rps_nothing_waits_and_bad_limits_are_refused() -> None:
    pool = EndpointPool(["http://a/v1"])
    assert all(pool.reserve(pool.endpoints[0]) == 0.0 for _ in range(100))
    with pytest.raises(ConfigError):
        EndpointPool(["http://a/v1"], rps=0)
    with pytest.raises(ConfigError):
        EndpointPool(["http://a/v1"], rps=1, burst=0.5)
    with pytest.raises(ConfigError):
        OpenAIBackend("http://a/v1", health_path="models")


async def test_backend_throttles_requests_beyond_the_burst() -> None:
    with FakeOpenAIServer() as srv:
        async with OpenAIBackend(srv.url, max_concurrency=8, endpoint_rps=50.0, endpoint_burst=2) as lm:
            results = await asyncio.gather(*[lm.sample(Q, P) for _ in range(6)])
            st = lm.stats["endpoints"][srv.url.rstrip("/")]
    assert len(results) == 6 and srv.stats.completed == 6
    assert st["throttled"] == 4  # the first two used the burst, the other four waited for their slot


async def test_a_recovered_endpoint_passes_a_health_check_before_serving_again() -> None:
    port = _free_port()
    late = f"http://127.0.0.1:{port}/v1"
    with FakeOpenAIServer() as live:
        async with OpenAIBackend([late, live.url], max_concurrency=2, cooldown_s=0.05, cooldown_max_s=0.05,
                                 backoff_base_s=0.001) as lm:
            first = await asyncio.gather(*[lm.sample(Q, P) for _ in range(4)])
            assert {r[0].endpoint for r in first} == {live.url.rstrip("/")}
            with FakeOpenAIServer(port=port) as revived:
                await asyncio.sleep(0.1)  # past the cool-down
                again = await asyncio.gather(*[lm.sample(Q, P) for _ in range(8)])
                probes = revived.stats.by_path.get("/v1/models", 0)
                served = revived.stats.completed
            st = lm.stats["endpoints"][late]
    assert probes == 1 and st["probes"] == 1  # one GET /v1/models, then it rejoined
    assert served > 0 and sum(r[0].endpoint == late for r in again) == served


async def test_a_still_dead_endpoint_fails_its_health_check_and_gets_no_request() -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with FakeOpenAIServer() as live:
        async with OpenAIBackend([dead, live.url], max_concurrency=1, cooldown_s=0.02, cooldown_max_s=0.02,
                                 backoff_base_s=0.001) as lm:
            await lm.sample(Q, P)
            await asyncio.sleep(0.05)
            results = [await lm.sample(Q, P) for _ in range(3)]
            st = lm.stats["endpoints"][dead]
    assert all(r[0].endpoint == live.url.rstrip("/") for r in results)
    assert st["probes"] >= 1 and st["requests"] == 1  # only the first contact was a real request
