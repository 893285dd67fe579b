"""OpenAIBackend retry policy against injected faults: backoff, Retry-After, give-up errors, no silent loss."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest

from thinktwice.errors import BackendError, BackendUnavailable, ConfigError, RateLimited
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.lm.retry import RetryPolicy, parse_retry_after
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Prompt, SamplingParams

Q = Prompt.user("What is 6 times 7?")
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "timeout_s": 0.5}


async def test_429_retry_after_is_honoured() -> None:
    with FakeOpenAIServer(fault_script=["429", "429"], retry_after_s=0.05) as srv:
        async with OpenAIBackend(srv.url, **FAST) as lm:
            t0 = time.monotonic()
            (s,) = await lm.sample(Q, SamplingParams())
            waited = time.monotonic() - t0
        assert srv.stats.requests == 3 and srv.stats.completed == 1
    assert s.text and lm.stats["retries"] == {"429": 2}
    assert lm.stats["backoff_seconds"] >= 2 * 0.05  # each wait is max(Retry-After, jittered backoff)
    assert waited >= 2 * 0.05


@pytest.mark.parametrize("fault,cause", [("500", "500"), ("503", "503"), ("timeout", "timeout"),
                                         ("truncate", "invalid-body"), ("disconnect", "connection")])
async def test_transient_faults_are_retried(fault: str, cause: str) -> None:
    with FakeOpenAIServer(fault_script=[fault, fault]) as srv:
        async with OpenAIBackend(srv.url, timeout_retries=2, **FAST) as lm:  # timeouts are resent only if asked
            samples = await lm.sample(Q, SamplingParams(), n=2)
        assert srv.stats.faults == {fault: 2} and srv.stats.completed == 1
    assert len(samples) == 2 and lm.stats["retries"] == {cause: 2} and lm.stats["requests"] == 3


@pytest.mark.parametrize("fault,exc,status", [("429", RateLimited, 429), ("500", BackendUnavailable, 500),
                                              ("timeout", BackendUnavailable, None)])
async def test_giving_up_raises_the_matching_error(fault: str, exc: type[BackendError], status: int | None) -> None:
    with FakeOpenAIServer(fault_rate=1.0, faults=(fault,), retry_after_s=0.001) as srv:
        async with OpenAIBackend(srv.url, model="m", max_retries=2, timeout_retries=5, **FAST) as lm:
            with pytest.raises(exc, match="gave up after 3 attempts") as ei:
                await lm.sample(Q, SamplingParams())
        assert srv.stats.requests == 3
    assert ei.value.status == status and ei.value.backend == "openai" and ei.value.model == "m"
    assert (ei.value.retry_after == 0.001) == (fault == "429")
    assert lm.stats["failures"] == 1


async def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    with FakeOpenAIServer(fault_rate=1.0, faults=("429",), retry_after_s=120) as srv:
        async with OpenAIBackend(srv.url, retry_after_max_s=10, **FAST) as lm:
            with pytest.raises(RateLimited) as ei:
                await lm.sample(Q, SamplingParams())
        assert srv.stats.requests == 1
    assert ei.value.retry_after == 120


async def test_jitter_is_determined_by_the_seed() -> None:
    async def backoff(seed: int) -> float:
        with FakeOpenAIServer(fault_script=["500"] * 4) as srv:
            async with OpenAIBackend(srv.url, seed=seed, backoff_base_s=0.002, backoff_max_s=0.05) as lm:
                await lm.sample(Q, SamplingParams())
        return float(lm.stats["backoff_seconds"])

    a, b, c = await backoff(7), await backoff(7), await backoff(8)
    assert a == b and a != c
    pol = RetryPolicy(backoff_base_s=0.5, backoff_max_s=2.0)
    d1 = [pol.backoff(k, random.Random(3)) for k in range(6)]
    assert d1 == [pol.backoff(k, random.Random(3)) for k in range(6)]
    rng = random.Random(0)
    for k in range(8):
        assert 0 <= pol.backoff(k, rng) <= min(2.0, 0.5 * 2**k)
    assert pol.delay(0, rng, retry_after=3.0) == 3.0


def test_parse_retry_after_and_policy_validation() -> None:
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == pytest.approx(30.0)
    with pytest.raises(ConfigError):
        RetryPolicy(backoff_base_s=2.0, backoff_max_s=1.0)


async def test_every_request_succeeds_or_raises_under_random_faults() -> None:
    with FakeOpenAIServer(fault_rate=0.2, faults=("429", "500", "timeout", "truncate"), seed=1,
                          retry_after_s=0.001) as srv:
        async with OpenAIBackend(srv.url, max_concurrency=32, max_retries=3, timeout_s=0.25,
                                 backoff_base_s=0.005, backoff_max_s=0.02) as lm:
            results = await asyncio.gather(
                *[lm.sample(Q, SamplingParams(seed=i, logprobs=False)) for i in range(200)],
                return_exceptions=True)
        faults, completed, received = srv.stats.total_faults, srv.stats.completed, srv.stats.requests
    ok = [r for r in results if isinstance(r, list)]
    errors = [r for r in results if not isinstance(r, list)]
    assert all(isinstance(e, BackendError) for e in errors), errors[:3]
    assert len(ok) + len(errors) == 200 and all(len(r) == 1 and r[0].text for r in ok)
    assert faults > 0 and completed >= len(ok) and received == completed + faults
    st = lm.stats
    assert st["samples"] == len(ok) and st["failures"] == len(errors) and st["requests"] >= received
    # every attempt either succeeded, was retried, or ended in the error its caller got
    assert st["requests"] == len(ok) + sum(st["retries"].values()) + len(errors)
    assert st["retries"].get("429", 0) > 0 and st["retries"].get("invalid-body", 0) > 0
