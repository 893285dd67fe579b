"""Shared pieces of the embedded-backend benchmarks (bench/token_stats.py, bench/batched_sampling.py).

Timing rules: every contender runs once per repetition in a fixed interleaved order, so drift in the
machine's speed hits all of them alike; figures are min / median / max over the repetitions, and each
ratio is computed from medians measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")
STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class Timing:
    """Wall seconds and generated tokens of one contender, one entry per repetition."""

    label: str
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def add(self, seconds: float, tokens: int) -> None:
        self.seconds.append(seconds)
        self.tokens.append(tokens)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ms_per_token(self) -> list[float]:
        return [1000 * s / max(t, 1) for s, t in zip(self.seconds, self.tokens)]

    @property
    def median_ms_per_token(self) -> float:
        return statistics.median(self.ms_per_token)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """Run ``fn`` (which returns how many tokens it generated) and time it."""
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def table(title: str, rows: list[Timing]) -> Table:
    t = Table(title=title)
    for col in ("contender", "wall s (min / med / max)", "tokens (med)", "ms/token (min / med / max)"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for r in rows:
        s, m = r.seconds, r.ms_per_token
        t.add_row(r.label, f"{min(s):.2f} / {statistics.median(s):.2f} / {max(s):.2f}",
                  f"{statistics.median(r.tokens):.0f}",
                  f"{min(m):.2f} / {statistics.median(m):.2f} / {max(m):.2f}")
    return t


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} CPUs visible, load average {load:.1f} at start"


@contextlib.contextmanager
def plain_cpu_buffers() -> Iterator[None]:
    """Make llama-cpp-python's high-level ``Llama`` load weights without the AMX repack buffers, as
    the thinktwice backend does (the repack of Q4_1 crashes multi-token decodes on AMX Xeons)."""
    import llama_cpp.llama_cpp as low  # the module whose attribute Llama.__init__ looks up

    original = low.llama_model_default_params

    def patched() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = patched
    try:
        yield
    finally:
        low.llama_model_default_params = original


def high_level_llama(path: str, n_threads: int, n_ctx: int = 1024, logits_all: bool = False) -> Any:
    import llama_cpp

    with plain_cpu_buffers():
        return llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                               logits_all=logits_all, verbose=False, seed=0)


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread: llama.cpp with 2 threads was measured 10-40x slower when driven
    from Python's main thread on a busy machine, so no contender is timed from it."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            err.append(e)

    th = threading.Thread(target=run)
    th.start()
    th.join()
    if err:
        raise err[0]
    return out[0]


console = Console(width=130)
