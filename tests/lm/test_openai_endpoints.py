"""Several base URLs: load spreading, dead endpoints leaving and rejoining the rotation (issue 12)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from thinktwice.errors import BackendUnavailable, ConfigError
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


async def test_two_urls_share_the_traffic_and_samples_say_which() -> None:
    with FakeOpenAIServer(latency_s=0.005) as a, FakeOpenAIServer(latency_s=0.005) as b:
        async with OpenAIBackend([a.url, b.url], max_concurrency=8) as lm:
            results = await asyncio.gather(*[lm.sample(Q, P) for _ in range(40)])
        served = [r[0].endpoint for r in results]
        assert served.count(a.url) == a.stats.completed and served.count(b.url) == b.stats.completed
        assert a.stats.completed > 0 and b.stats.completed > 0 and len(served) == 40


async def test_an_endpoint_dead_from_the_start_is_skipped() -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with FakeOpenAIServer() as live:
        async with OpenAIBackend([dead, live.url], max_concurrency=4, backoff_base_s=0.001) as lm:
            results = await asyncio.gather(*[lm.sample(Q, P) for _ in range(20)])
            st = lm.stats
    assert {r[0].endpoint for r in results} == {live.url}
    assert st["endpoints"][dead]["down"] and st["endpoints"][dead]["failures"] >= 1
    assert st["endpoints"][dead]["failures"] <= 4  # out of rotation after the first refusals


async def test_a_failing_endpoint_leaves_the_rotation_and_rejoins_after_cooldown() -> None:
    with FakeOpenAIServer() as a:
        b = FakeOpenAIServer().start()
        port_b = b.port
        async with OpenAIBackend([a.url, b.url], max_concurrency=4, backoff_base_s=0.001, failure_threshold=2,
                                 cooldown_s=0.2, cooldown_max_s=0.2) as lm:
            await asyncio.gather(*[lm.sample(Q, P) for _ in range(8)])
            assert b.stats.completed > 0
            b.stop()
            results = await asyncio.gather(*[lm.sample(Q, P) for _ in range(30)])
            st = lm.stats["endpoints"][b.url]
            assert all(r[0].endpoint == a.url for r in results)
            assert st["down"] and st["times_down"] >= 1 and st["failures"] <= 4
            b2 = FakeOpenAIServer(port=port_b).start()  # the server comes back on the same address
            try:
                await asyncio.sleep(0.25)
                results = await asyncio.gather(*[lm.sample(Q, P) for _ in range(20)])
                assert b2.stats.completed > 0 and not lm.stats["endpoints"][b.url]["down"]
            finally:
                b2.stop()


async def test_all_endpoints_unreachable_fails_at_once() -> None:
    urls = [f"http://127.0.0.1:{_free_port()}/v1" for _ in range(2)]
    async with OpenAIBackend(urls, backoff_base_s=1.0) as lm:
        with pytest.raises(BackendUnavailable, match="is the server running"):
            await lm.sample(Q, P)
    assert lm.stats["requests"] == 2


async def test_per_endpoint_limit_bounds_server_side_concurrency() -> None:
    active = 0
    peak = 0

    with FakeOpenAIServer(latency_s=0.01) as srv:
        orig = srv._complete

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                return await orig(*args, **kwargs)
            finally:
                active -= 1

        srv._complete = counting  # type: ignore[method-assign]
        async with OpenAIBackend(srv.url, max_concurrency=16, endpoint_max_concurrency=3) as lm:
            await asyncio.gather(*[lm.sample(Q, P) for _ in range(24)])
    assert peak == 3


def test_pool_cooldown_doubles_and_allows_one_probe() -> None:
    now = [0.0]
    pool = EndpointPool(["http://a/v1"], failure_threshold=2, cooldown_s=1.0, cooldown_max_s=3.0,
                        clock=lambda: now[0])
    (a,) = pool.endpoints
    pool.record_ok(a)
    pool.record_connect_failure(a)
    assert pool.pick() is a  # one failure is not enough
    pool.record_connect_failure(a)
    assert pool.pick() is None and pool.wait_s() == pytest.approx(1.0)
    now[0] = 1.01
    assert pool.pick() is a and a.probing  # the probe
    assert pool.pick() is None  # only one probe at a time
    pool.record_connect_failure(a)  # probe failed: cool-down doubles to 2 s
    now[0] = 2.9
    assert pool.pick() is None
    now[0] = 3.02
    assert pool.pick() is a
    pool.record_connect_failure(a)  # doubled again, capped at 3 s
    assert a.down_until == pytest.approx(3.02 + 3.0) and a.times_down == 3
    now[0] = 6.1
    assert pool.pick() is a
    pool.record_ok(a)
    assert a.consecutive_failures == 0 and not a.probing and pool.pick() is a
    assert not pool.all_refused()
    with pytest.raises(ConfigError):
        EndpointPool([])


def test_pool_prefers_the_least_loaded_and_skips_the_down() -> None:
    now = [0.0]
    pool = EndpointPool(["http://a/v1", "http://b/v1", "http://c/v1"], failure_threshold=1,
                        clock=lambda: now[0])
    a, b, c = pool.endpoints
    for ep in pool.endpoints:
        pool.record_ok(ep)
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert pool.pick() is b
    pool.record_connect_failure(b)
    assert {pool.pick() for _ in range(5)} == {c}
    c.in_flight = 0
    a.in_flight = 0
    assert {pool.pick() for _ in range(6)} == {a, c}  # ties rotate
    first = EndpointPool(["http://x/v1"], clock=lambda: now[0])
    first.record_connect_failure(first.endpoints[0])  # refused at first contact: out at once
    assert first.pick() is None and first.all_refused()
