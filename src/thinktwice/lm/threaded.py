"""The shared front of the in-process backends (``llamacpp``, ``organism``, ``hf``): a blocking sampler
runs off the event loop, and a cancelled caller stops it at its next step instead of leaving it to run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.types import Prompt, Sample, SamplingParams

__all__ = ["BlockingSampler", "sample_off_loop"]

BlockingSampler = Callable[[Prompt, SamplingParams, int, int, Any, threading.Event], list[Sample]]
"""``(prompt, params, n, base_seed, monitor, cancel) -> samples``; it polls ``cancel`` between steps."""


async def sample_off_loop(run: Callable[..., Awaitable[list[Sample]]], fn: BlockingSampler, prompt: Prompt,
                          params: SamplingParams, n: int, monitor: Any, next_seed: Callable[[], int]
                          ) -> list[Sample]:
    """Check ``n``, take the base seed (``params.seed``, else ``next_seed()``), and await
    ``run(fn, prompt, params, n, seed, monitor, cancel)`` (``run`` puts ``fn`` on a thread: e.g.
    ``asyncio.to_thread`` or the backend's own worker); cancellation sets ``cancel`` and propagates."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    base = params.seed if params.seed is not None else next_seed()
    cancel = threading.Event()
    try:
        return await run(fn, prompt, params, n, base, monitor, cancel)
    except asyncio.CancelledError:
        cancel.set()  # the worker stops at its next step
        raise
