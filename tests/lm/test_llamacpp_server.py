"""Integration: the openai backend against a server that is not ours, llama-cpp-python's own
OpenAI-compatible server (one slot, ignores ``n``) on the shipped SmolLM2 GGUF, started here on
127.0.0.1 with 2 threads. The reported failure: ``eval -n 4 -c 2`` queued requests past the read
timeout and resent them. Now the eval completes with every generation the server ran billed once,
no request is abandoned in its queue, and a pool drawn through it carries parsed logprobs.

Needs ``llama-cpp-python[server]`` (sse-starlette, starlette-context, pydantic-settings).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from thinktwice.eval.pool import PoolConfig, create_pool_run, draw_pool
from thinktwice.eval.store import RunStore
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.registry import tasks

pytestmark = pytest.mark.slow

for _dep in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings"):
    if importlib.util.find_spec(_dep) is None:
        pytest.skip(f"llama-cpp-python[server] is not installed ({_dep} missing)", allow_module_level=True)

SERVED = re.compile(r'"POST /v1/(?:chat/)?completions HTTP/1\.1" 200')


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port; ``log()`` is what it printed so far."""

    def __init__(self, model: Path, log_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_threads", "2", "--n_threads_batch", "2", "--model_alias", "smol",
             "--n_ctx", "2048"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log()[-2000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError("llama_cpp.server did not start in time")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def served(self) -> int:
        """Completions the server answered (its access log's 200 lines)."""
        return len(SERVED.findall(self.log()))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    from thinktwice.lm.gguf_weights import shipped_model_path

    srv = LlamaServer(shipped_model_path(), tmp_path_factory.mktemp("llama") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_eval_self_consistency_on_a_one_slot_server_bills_every_generation_once(
        server: LlamaServer, tmp_path: Path) -> None:
    from thinktwice.cli import app

    before = server.served()
    store_path = tmp_path / "runs.db"
    res = CliRunner().invoke(app, [
        "eval", "--backend", "openai", "--base-url", server.url, "--model", "smol", "--task", "gsm8k",
        "--limit", "3", "--strategy", "self-consistency", "-n", "4", "-c", "2", "-T", "max_tokens=40",
        "--store", str(store_path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["failed"] == 0 and summary["n"] == 3
    run_id = summary["run"]
    served = server.served() - before
    with RunStore(store_path) as store:
        decisions = store.decisions(run_id)
        stored = store.samples(run_id)
    samples = [s.sample for s in stored]
    assert len(decisions) == 3
    per_problem = {d.problem_id: [s for s in stored if s.problem_id == d.problem_id] for d in decisions}
    assert all(len(v) == 4 for v in per_problem.values())
    calls = sum(d.usage.calls for d in decisions)
    # one-slot server without n: 4 calls a problem, each served once and billed once
    assert calls == served == 12, (calls, served)
    assert sum(d.usage.completion_tokens for d in decisions) == sum(s.usage.completion_tokens for s in samples)
    assert all(0 < s.usage.completion_tokens <= 40 and not s.usage.estimated for s in samples)
    assert "Disconnected from client" not in server.log()  # nothing given up while queued


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to a real transport; keeps each completion's reported usage and the most
    completions ever in flight at once."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.usages: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return await self.inner.handle_async_request(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            resp = await self.inner.handle_async_request(request)
            content = await resp.aread()
        finally:
            self.in_flight -= 1
        self.bodies.append(json.loads(request.content))
        self.usages.append(json.loads(content)["usage"])
        return httpx.Response(resp.status_code, headers=resp.headers, content=content)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_pool_drawn_through_it_has_parsed_logprobs(server: LlamaServer, tmp_path: Path) -> None:
    task = tasks.create("gsm8k", max_tokens=24)
    problems = task.load("test", limit=2)
    rec = Recorder()
    before = server.served()

    async def draw() -> Any:
        async with OpenAIBackend(server.url, model="smol", max_concurrency=4, transport=rec) as lm:
            with RunStore(tmp_path / "pool.db") as store:
                config = PoolConfig(n=3, batch=3, concurrency=2, top_logprobs=3, max_tokens=24)
                rid = create_pool_run(store, task, lm, problems, config)
                result = await draw_pool(task, lm, problems, store, rid, config)
                return result, [s.sample for s in store.samples(rid)], lm.stats

    result, samples, stats = asyncio.run(draw())
    assert result.failed == () and len(samples) == 6
    assert len(rec.usages) == server.served() - before == 6  # the server ignores n: one call per sample
    # 2 problems x 3 samples with room for 4: a fixed limit sends 4 at once to the one slot; adaptive,
    # at most the one probe of a second request
    assert rec.peak <= 2
    assert sum(s.usage.completion_tokens for s in samples) == sum(u["completion_tokens"] for u in rec.usages)
    assert sum(s.usage.prompt_tokens for s in samples) == sum(u["prompt_tokens"] for u in rec.usages)
    assert all(b.get("logprobs") is True and b.get("top_logprobs") == 3 for b in rec.bodies)
    for s in samples:
        assert s.tokens is not None and len(s.tokens) == s.usage.completion_tokens
        assert "".join(t.token for t in s.tokens) == s.text
        assert all(t.logprob <= 0 and 1 <= len(t.top) <= 4 for t in s.tokens)
        assert all(t.top[0][1] >= t.logprob - 1e-6 for t in s.tokens)  # alternatives sorted, most likely first
    assert stats["endpoints"][server.url]["n_cap"] == 1
