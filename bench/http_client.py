"""Throughput of OpenAIBackend.sample against a bare httpx.AsyncClient loop making the same POSTs.

The FakeOpenAIServer runs in its own process (so it does not share the client's GIL) with a small
fixed latency, no faults and short answers. Each repetition sends the same number of requests at
the same concurrency through the backend and through the bare loop, alternating which goes first;
the table reports the median over repetitions. The headline ratio is against one plain
``httpx.AsyncClient``; the backend spreads its connections over several small clients (httpcore's
pool does work proportional to its size on every request), so a third row gives the same POSTs
through equally sharded bare clients: that ratio is the backend's own overhead.

    python bench/http_client.py [--requests 2000] [--concurrency 64] [--reps 3] [--latency 0.005]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from thinktwice.lm.openai import OpenAIBackend
from thinktwice.testing import FakeOpenAIServer
from thinktwice.types import Prompt, SamplingParams

PROMPT = Prompt.user("What is 6 times 7?")
PARAMS = SamplingParams(max_tokens=16, temperature=0.7, logprobs=False)


def _serve(port_q: Any, stop_ev: Any, latency: float) -> None:
    srv = FakeOpenAIServer(latency_s=latency, reasoning_words=(2, 4), answers={"42": 0.6, "41": 0.4})
    with srv:
        port_q.put(srv.port)
        stop_ev.wait()


async def run_backend(url: str, n: int, conc: int) -> float:
    async with OpenAIBackend(url, max_concurrency=conc, model="fake") as lm:
        await asyncio.gather(*[lm.sample(PROMPT, PARAMS) for _ in range(conc)])  # warm the connections
        t0 = time.perf_counter()
        out = await asyncio.gather(*[lm.sample(PROMPT, PARAMS) for _ in range(n)])
        dt = time.perf_counter() - t0
    assert all(len(s) == 1 and s[0].text for s in out)
    return dt


async def run_bare(url: str, n: int, conc: int, shards: int = 1) -> float:
    """The same POSTs through ``shards`` httpx clients (1: the plain way; least-loaded choice otherwise)."""
    body = {"model": "fake", "max_tokens": PARAMS.max_tokens, "temperature": PARAMS.temperature,
            "top_p": PARAMS.top_p, "messages": [{"role": m.role, "content": m.content} for m in PROMPT.messages]}
    sem = asyncio.Semaphore(conc)
    per = -(-conc // shards) + 4
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    clients = [httpx.AsyncClient(timeout=httpx.Timeout(60.0, pool=None), limits=limits) for _ in range(shards)]
    load = [0] * shards

    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            await stack.enter_async_context(c)

        async def one() -> str:
            async with sem:
                i = min(range(shards), key=load.__getitem__)
                load[i] += 1
                try:
                    r = await clients[i].post(url + "/chat/completions", json=body)
                finally:
                    load[i] -= 1
            r.raise_for_status()
            return str(json.loads(r.content)["choices"][0]["message"]["content"])

        await asyncio.gather(*[one() for _ in range(conc)])
        t0 = time.perf_counter()
        out = await asyncio.gather(*[one() for _ in range(n)])
        dt = time.perf_counter() - t0
    assert all(out)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.005)
    a = ap.parse_args()
    console, err = Console(), Console(stderr=True)
    ctx = mp.get_context("spawn")
    port_q, stop_ev = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(port_q, stop_ev, a.latency), daemon=True)
    proc.start()
    try:
        url = f"http://127.0.0.1:{port_q.get(timeout=60)}/v1"
        runners = {"backend": run_backend, "bare": run_bare,
                   "bare-sharded": functools.partial(run_bare, shards=-(-a.concurrency // 8))}
        times: dict[str, list[float]] = {k: [] for k in runners}
        for rep in range(a.reps):
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            for which in order:
                fn = runners[which]
                dt = asyncio.run(fn(url, a.requests, a.concurrency))
                times[which].append(dt)
                err.print(f"rep {rep} {which}: {dt:.3f} s ({a.requests / dt:.0f} req/s)", style="dim",
                          highlight=False)
    finally:
        stop_ev.set()
        proc.join(timeout=10)
    med = {k: statistics.median(v) for k, v in times.items()}
    rps = {k: a.requests / v for k, v in med.items()}
    table = Table(title=f"{a.requests} requests, concurrency {a.concurrency}, server latency "
                        f"{a.latency * 1000:.0f} ms, median of {a.reps}")
    for col in ("client", "wall s (median)", "req/s", "all runs (s)"):
        table.add_column(col, justify="right" if col != "client" else "left")
    labels = (("backend", "OpenAIBackend.sample"), ("bare", "bare httpx.AsyncClient"),
              ("bare-sharded", "bare httpx, 8 connections per client"))
    for k, label in labels:
        table.add_row(label, f"{med[k]:.3f}", f"{rps[k]:.0f}", ", ".join(f"{t:.3f}" for t in times[k]))
    console.print(table)
    print(f"throughput_ratio: {rps['backend'] / rps['bare']:.2f}")
    print(f"backend_rps: {rps['backend']:.0f}")
    print(f"bare_rps: {rps['bare']:.0f}")
    print(f"ratio_vs_sharded_bare: {rps['backend'] / rps['bare-sharded']:.2f}")


if __name__ == "__main__":
    main()
