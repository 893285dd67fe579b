"""sample_off_loop: the shared front of the in-process backends (n checks, base seed, cancellation)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.threaded import sample_off_loop
from thinktwice.types import Prompt, Sample, SamplingParams

P = Prompt.user("hi")


def _echo(prompt: Prompt, params: SamplingParams, n: int, base: int, monitor: object,
          cancel: threading.Event) -> list[Sample]:
    return [Sample(text=f"{base + i}") for i in range(n)]


async def test_seed_comes_from_params_else_from_the_backend_and_n_is_checked() -> None:
    out = await sample_off_loop(asyncio.to_thread, _echo, P, SamplingParams(seed=7), 2, None, lambda: 99)
    assert [s.text for s in out] == ["7", "8"]
    out = await sample_off_loop(asyncio.to_thread, _echo, P, SamplingParams(), 1, None, lambda: 99)
    assert [s.text for s in out] == ["99"]
    assert await sample_off_loop(asyncio.to_thread, _echo, P, SamplingParams(), 0, None, lambda: 1) == []
    with pytest.raises(ConfigError, match="n must be >= 0"):
        await sample_off_loop(asyncio.to_thread, _echo, P, SamplingParams(), -1, None, lambda: 1)


async def test_cancelling_the_caller_stops_the_worker() -> None:
    seen: list[threading.Event] = []
    stopped = threading.Event()

    def slow(prompt: Prompt, params: SamplingParams, n: int, base: int, monitor: object,
             cancel: threading.Event) -> list[Sample]:
        seen.append(cancel)
        deadline = time.monotonic() + 10
        while not cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        stopped.set()
        return []

    task = asyncio.ensure_future(sample_off_loop(asyncio.to_thread, slow, P, SamplingParams(), 1, None, lambda: 0))
    while not seen:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[0].is_set()
    assert await asyncio.to_thread(stopped.wait, 5)
