"""Proxy benchmark: added latency of passthrough, and self-consistency n=8 against optillm.

1. Passthrough: 64 concurrent clients send 2000 chat requests to a fake upstream (20 ms latency)
   directly, then through ``thinktwice serve --strategy passthrough``; the added latency is the
   difference of the latency percentiles (p50, p99), and every non-200 is an error.
2. Self-consistency with 8 samples per request, thinktwice against optillm 0.4.0 (installed in its
   own venv, run as a subprocess against the same fake upstream): requests/s, and whether the
   usage each reports equals what the upstream counted (prompt and completion tokens).
   optillm's ``self_consistency`` approach draws a fixed 5 samples, one call at a time; its
   ``majority_voting`` plugin draws k=8 in one n=8 call. Both are run; the headline ratio uses
   ``self_consistency`` (the approach the issue names), the matched-sample ratio is shown too.

Every server runs in its own process on 127.0.0.1; nothing touches the network.

    python bench/proxy.py [--requests 2000] [--clients 64] [--latency 0.02] [--optillm PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
MSG = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "A farmer has 6 rows of 7 trees. How many trees are there?"},
]


# -- the fake upstream, in its own process, with its counters readable over a pipe -----------------
def serve_upstream(port: int, latency: float) -> None:
    """Child-process mode: run FakeOpenAIServer; answer 'stats' / 'reset' lines on stdin."""
    from thinktwice.testing import FakeOpenAIServer

    with FakeOpenAIServer(port=port, latency_s=latency, answers={"42": 0.6, "41": 0.25, "43": 0.15}) as srv:
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                st = srv.stats
                print(
                    json.dumps(
                        {
                            "requests": st.requests,
                            "completed": st.completed,
                            "choices": st.choices,
                            "prompt_tokens": st.prompt_tokens,
                            "completion_tokens": st.completion_tokens,
                        }
                    ),
                    flush=True,
                )
            elif cmd == "reset":
                srv.reset_stats()
                print("ok", flush=True)
            elif cmd == "quit":
                break


class Upstream:
    def __init__(self, latency: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-upstream", str(self.port), "--latency", str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("fake upstream failed to start")
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def stats(self) -> dict[str, int]:
        return json.loads(self._ask("stats"))  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._ask("reset")

    def close(self) -> None:
        try:
            self._ask("quit")
        except (BrokenPipeError, OSError):
            pass
        stop(self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_ms_per_request(proc: subprocess.Popen[Any], fn: Any) -> tuple[Run, float | None]:
    """Run ``fn()`` (a load run) and charge the process's CPU time to each successful request."""
    c0 = cpu_seconds(proc.pid)
    run = fn()
    c1 = cpu_seconds(proc.pid)
    per = None if c0 is None or c1 is None or not run.latencies else (c1 - c0) / len(run.latencies) * 1e3
    return run, per


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


# -- the load generator ---------------------------------------------------------------------------
@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall: float = 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


async def load(
    base_url: str, body: dict[str, Any], requests: int, clients: int, timeout: float = 300.0
) -> Run:
    """``clients`` closed-loop workers send ``requests`` POSTs to ``base_url``/chat/completions.

    The load generator is the proxy's own lean keep-alive client (one connection per worker), so
    its CPU cost per request stays far below what is measured.
    """
    from thinktwice.serve.http1 import Http1Pool

    run = Run()
    pool = Http1Pool(timeout, clients)
    headers = {"Content-Type": "application/json"}
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            data = json.dumps({**body, "seed": left}).encode()
            t0 = time.perf_counter()
            try:
                status, _, raw = await pool.post(base_url, "/chat/completions", data, headers)
                dt = time.perf_counter() - t0
                if status != 200:
                    raise RuntimeError(f"status {status}")
                usage = json.loads(raw).get("usage") or {}
                run.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                run.completion_tokens += int(usage.get("completion_tokens") or 0)
                run.latencies.append(dt)
            except Exception as e:  # noqa: BLE001 - counted, reported below
                run.errors += 1
                kind = str(e)[:60] or type(e).__name__
                run.error_kinds[kind] = run.error_kinds.get(kind, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    run.wall = time.perf_counter() - t0
    await pool.aclose()
    return run


def measure(url: str, body: dict[str, Any], requests: int, clients: int, warmup: int = 128) -> Run:
    if warmup:
        asyncio.run(load(url, body, warmup, clients))
    return asyncio.run(load(url, body, requests, clients))


def merge(runs: list[Run]) -> Run:
    out = Run()
    for r in runs:
        out.latencies += r.latencies
        out.errors += r.errors
        for k, v in r.error_kinds.items():
            out.error_kinds[k] = out.error_kinds.get(k, 0) + v
        out.prompt_tokens += r.prompt_tokens
        out.completion_tokens += r.completion_tokens
        out.wall += r.wall
    return out


# -- the proxies ----------------------------------------------------------------------------------
def start_thinktwice(upstream: Upstream, strategy: str) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": "", "THINKTWICE_API_KEYS": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thinktwice.cli",
            "serve",
            "--upstream",
            upstream.url,
            "--model",
            "fake-model",
            "--strategy",
            strategy,
            "--port",
            str(port),
            "--max-n",
            "8",
            "--concurrency",
            "512",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/health", proc, 60)
    return proc, base + "/v1"


def find_optillm(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() else None
    for cand in (os.environ.get("OPTILLM_BIN"), shutil.which("optillm")):
        if cand and Path(cand).exists():
            return cand
    return None


def start_optillm(binary: str, upstream: Upstream) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-local",
        "OPTILLM_LOG": "warning",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("OPTILLM_API_KEY", None)
    log = open(os.devnull, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [binary, "--base-url", upstream.url, "--port", str(port), "--log", "warning"],
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/health", proc, 600)
    return proc, base + "/v1"


def usage_ok(run: Run, counted: dict[str, int]) -> bool:
    return (
        run.errors == 0
        and run.prompt_tokens == counted["prompt_tokens"]
        and run.completion_tokens == counted["completion_tokens"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02, help="fake upstream latency per request (s)")
    ap.add_argument("--sc-requests", type=int, default=256)
    ap.add_argument(
        "--rounds", type=int, default=4, help="alternations of direct and proxied passthrough runs"
    )
    ap.add_argument("--light-clients", type=int, default=4, help="clients of the light-load comparison")
    ap.add_argument("--optillm", default=None, help="path of the optillm executable (its own venv)")
    ap.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_upstream is not None:
        serve_upstream(a.serve_upstream, a.latency)
        return

    out = Console(width=160)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    console.print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} before the run" if load else ""
    )
    up = Upstream(a.latency)
    procs: list[subprocess.Popen[Any]] = [up.proc]
    results: dict[str, Any] = {}
    try:
        body = {"model": "fake-model", "messages": MSG, "max_tokens": 64}
        console.print(
            f"passthrough: {a.requests} requests, {a.clients} clients, upstream latency "
            f"{a.latency * 1e3:g} ms, {a.rounds} interleaved rounds"
        )
        tt, tt_url = start_thinktwice(up, "passthrough")
        procs.append(tt)
        measure(up.url, body, 128, a.clients, warmup=0)
        measure(tt_url, body, 128, a.clients, warmup=0)
        per_round = max(1, a.requests // a.rounds)
        directs, proxieds, cpus = [], [], []
        for _ in range(a.rounds):  # alternate so both paths see the same machine load
            directs.append(measure(up.url, body, per_round, a.clients, warmup=0))
            run, cpu = cpu_ms_per_request(tt, lambda: measure(tt_url, body, per_round, a.clients, warmup=0))
            proxieds.append(run)
            if cpu is not None:
                cpus.append(cpu)
        direct, proxied = merge(directs), merge(proxieds)
        light_d, light_p = [], []
        for _ in range(a.rounds):  # the same at light load: per-hop cost without queueing
            light_d.append(measure(up.url, body, per_round // 4, a.light_clients, warmup=0))
            light_p.append(measure(tt_url, body, per_round // 4, a.light_clients, warmup=0))
        t = Table(title="passthrough latency (ms)")
        for col in ("path", "clients", "requests", "p50", "p90", "p99", "req/s", "errors"):
            t.add_column(col, justify="right")
        for name, k, r in (
            ("upstream direct", a.clients, direct),
            ("through thinktwice passthrough", a.clients, proxied),
            ("upstream direct", a.light_clients, merge(light_d)),
            ("through thinktwice passthrough", a.light_clients, merge(light_p)),
        ):
            t.add_row(
                name,
                str(k),
                str(len(r.latencies) + r.errors),
                f"{r.pct(0.5) * 1e3:.2f}",
                f"{r.pct(0.9) * 1e3:.2f}",
                f"{r.pct(0.99) * 1e3:.2f}",
                f"{r.rps:.0f}",
                str(r.errors),
            )
        out.print(t)
        if cpus:
            out.print(f"thinktwice proxy CPU per passthrough request: {statistics.mean(cpus):.2f} ms")
        if proxied.error_kinds:
            out.print(f"passthrough errors: {proxied.error_kinds}")
        results["p50"] = (proxied.pct(0.5) - direct.pct(0.5)) * 1e3
        results["p99"] = (proxied.pct(0.99) - direct.pct(0.99)) * 1e3

        # -- self-consistency, 8 samples --------------------------------------------------------
        def timed(
            proc: subprocess.Popen[Any], url: str, b: dict[str, Any]
        ) -> tuple[Run, dict[str, int], float | None]:
            measure(url, b, min(64, a.sc_requests), a.clients, warmup=0)
            up.reset()
            run, cpu = cpu_ms_per_request(proc, lambda: measure(url, b, a.sc_requests, a.clients, warmup=0))
            return run, up.stats(), cpu

        sc_body = {
            "model": "fake-model",
            "messages": MSG,
            "max_tokens": 64,
            "thinktwice": {"strategy": "self-consistency", "n": 8},
        }
        rows: list[tuple[str, Run, dict[str, int], int, float | None]] = []
        r, st, cpu = timed(tt, tt_url, sc_body)
        rows.append(("thinktwice self-consistency n=8", r, st, 8, cpu))
        r5, st, cpu = timed(tt, tt_url, {**sc_body, "thinktwice": {"strategy": "self-consistency", "n": 5}})
        rows.append(("thinktwice self-consistency n=5", r5, st, 5, cpu))
        binary = find_optillm(a.optillm)
        optillm_note = ""
        if binary is None:
            optillm_note = (
                "optillm not installed (pip install optillm==0.4.0 into a separate venv; --optillm PATH)"
            )
        else:
            try:
                op, op_url = start_optillm(binary, up)
                procs.append(op)
                for label, model, extra, k in (
                    ("optillm self_consistency (5 sequential)", "self_consistency-fake-model", {}, 5),
                    ("optillm majority_voting k=8", "majority_voting-fake-model", {"k": 8}, 8),
                ):
                    ob = {"model": model, "messages": MSG, "max_tokens": 64, **extra}
                    run, st, cpu = timed(op, op_url, ob)
                    rows.append((label, run, st, k, cpu))
            except RuntimeError as e:
                optillm_note = f"optillm failed to run: {e}"
        t = Table(title=f"self-consistency, {a.sc_requests} requests, {a.clients} clients")
        for col in (
            "proxy",
            "samples",
            "req/s",
            "p50 ms",
            "proxy CPU ms/req",
            "errors",
            "reported prompt/compl",
            "upstream prompt/compl",
            "usage correct",
        ):
            t.add_column(col, justify="right")
        for label, run, st, k, cpu in rows:
            t.add_row(
                label,
                str(k),
                f"{run.rps:.1f}",
                f"{run.pct(0.5) * 1e3:.0f}",
                "n/a" if cpu is None else f"{cpu:.1f}",
                str(run.errors),
                f"{run.prompt_tokens}/{run.completion_tokens}",
                f"{st['prompt_tokens']}/{st['completion_tokens']}",
                str(usage_ok(run, st)).lower(),
            )
            if run.error_kinds:
                out.print(f"{label} errors: {run.error_kinds}")
        out.print(t)
        if optillm_note:
            console.print(optillm_note)
        ours = rows[0]
        theirs = next((row for row in rows if row[0].startswith("optillm self_consistency")), None)
        mv = next((row for row in rows if row[0].startswith("optillm majority_voting")), None)
        if mv is not None and mv[1].rps > 0:
            out.print(
                f"sc8 vs optillm majority_voting k=8 (matched samples): {ours[1].rps / mv[1].rps:.1f}x req/s"
            )
        if theirs is not None and theirs[1].rps > 0:
            out.print(
                f"sc5 vs optillm self_consistency (matched samples): {r5.rps / theirs[1].rps:.1f}x req/s"
            )
        print(f"passthrough_p50_overhead_ms: {results['p50']:.2f}")
        print(f"passthrough_p99_overhead_ms: {results['p99']:.2f}")
        print(f"passthrough_errors: {proxied.errors}")
        if theirs is not None and theirs[1].rps > 0:
            print(f"sc8_rps_ratio_vs_optillm: {ours[1].rps / theirs[1].rps:.1f}")
        else:
            print(f"sc8_rps_ratio_vs_optillm: n/a ({optillm_note or 'optillm served no request'})")
        print(f"usage_correct_thinktwice: {str(usage_ok(ours[1], ours[2])).lower()}")
        if theirs is not None:
            print(f"usage_correct_optillm: {str(usage_ok(theirs[1], theirs[2])).lower()}")
        else:
            print("usage_correct_optillm: n/a")
    finally:
        for p in reversed(procs[1:]):
            stop(p)
        up.close()


if __name__ == "__main__":
    main()
