"""code-exec (sandboxed tests) and reward-model (HTTP) signals."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from thinktwice.errors import BackendError, BackendUnavailable, ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.registry import signals
from thinktwice.signals.verifier import CodeExecutionSignal, RewardModelSignal
from thinktwice.tasks.base import Query
from thinktwice.tasks.code import HumanEvalTask
from thinktwice.types import Candidate, Problem, Sample
from thinktwice.verify import bwrap_support

_SUPPORT = bwrap_support(os.path.realpath(sys.executable))
needs_bwrap = pytest.mark.skipif(not _SUPPORT.ok, reason=f"bubblewrap cannot run here ({_SUPPORT.reason})")

PROBLEM = Problem(
    id="toy/0",
    question='def add(a, b):\n    """Return a + b."""\n',
    gold="",
    meta={
        "prompt": 'def add(a, b):\n    """Return a + b."""\n',
        "entry_point": "add",
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
    },
)


def _cands(task: HumanEvalTask, texts: list[str]) -> list[Candidate]:
    return [Candidate(Sample(t), task.extract(t)) for t in texts]


def _meter() -> Meter:
    return Meter(ScriptedBackend(["unused"]))


@needs_bwrap
async def test_code_exec_scores_pass_and_fail() -> None:
    task = HumanEvalTask()
    query = Query.from_task(task, PROBLEM)
    texts = [
        "Here:\n```python\ndef add(a, b):\n    return a + b\n```",
        "```python\ndef add(a, b):\n    return a - b\n```",
        "    return a + b\n",  # body only: appended to the prompt
        "```python\ndef add(a, b):\n    while True:\n        pass\n```",
        "",
    ]
    sig = CodeExecutionSignal(timeout_s=1.5)
    scores = await sig.score(query, _cands(task, texts), _meter())
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0]


async def test_code_exec_needs_tests() -> None:
    task = HumanEvalTask()
    q = Query.from_task(task, Problem("x", "def f(): pass", ""))
    with pytest.raises(ConfigError, match="needs tests"):
        await CodeExecutionSignal().score(q, _cands(task, ["def f(): pass"]), _meter())


def test_registered() -> None:
    assert isinstance(signals.create("code-exec", timeout_s=2), CodeExecutionSignal)
    assert signals.get("reward-model") is RewardModelSignal


class _Handler(BaseHTTPRequestHandler):
    script: ClassVar[list[Any]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append({**body, "auth": self.headers.get("authorization")})
        status, reply = type(self).script.pop(0) if type(self).script else (200, {"score": len(body["response"])})
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.script, _Handler.seen = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/score"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


async def test_reward_model_scores_and_retries(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RM_TEST_KEY", "k123")
    _Handler.script = [(503, {"error": "busy"})]
    sig = RewardModelSignal(url=server, backoff_s=0.01, max_concurrency=1, api_key_env="RM_TEST_KEY")
    q = Query.from_task(HumanEvalTask(), PROBLEM)
    cands = [Candidate(Sample("abc"), None), Candidate(Sample("hello"), None)]
    scores = await sig.score(q, cands, _meter())
    assert scores == [3.0, 5.0]
    assert len(_Handler.seen) == 3  # one 503 retried
    assert {s["question"] for s in _Handler.seen} == {PROBLEM.question}
    assert all(s["auth"] == "Bearer k123" for s in _Handler.seen)


async def test_reward_model_bare_number_and_errors(server: str) -> None:
    q = Query.from_task(HumanEvalTask(), PROBLEM)
    cand = [Candidate(Sample("x"), None)]
    _Handler.script = [(200, 0.25)]
    assert await RewardModelSignal(url=server).score(q, cand, _meter()) == [0.25]
    _Handler.script = [(200, {"nope": 1})]
    with pytest.raises(BackendError, match="numeric"):
        await RewardModelSignal(url=server).score(q, cand, _meter())
    _Handler.script = [(400, {"error": "bad"})]
    with pytest.raises(BackendError, match="400"):
        await RewardModelSignal(url=server, retries=3).score(q, cand, _meter())
    _Handler.script = [(500, {})] * 3
    with pytest.raises(BackendUnavailable, match="3 attempts"):
        await RewardModelSignal(url=server, retries=2, backoff_s=0.0).score(q, cand, _meter())


async def test_reward_model_unreachable() -> None:
    sig = RewardModelSignal(url="http://127.0.0.1:9/score", retries=1, backoff_s=0.0, timeout_s=1)
    q = Query.from_task(HumanEvalTask(), PROBLEM)
    with pytest.raises(BackendUnavailable):
        await sig.score(q, [Candidate(Sample("x"), None)], _meter())


def test_reward_model_config_validation() -> None:
    with pytest.raises(ConfigError):
        RewardModelSignal(url="ftp://x")
    with pytest.raises(ConfigError):
        RewardModelSignal(url="http://x", retries=-1)
    assert math.isfinite(RewardModelSignal(url="http://x").config.timeout_s)


@needs_bwrap
async def test_code_exec_does_not_block_the_event_loop() -> None:
    import asyncio

    task = HumanEvalTask()
    query = Query.from_task(task, PROBLEM)
    slow = "```python\nimport time\ndef add(a, b):\n    time.sleep(0.5)\n    return a + b\n```"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.ensure_future(ticker())
    try:
        scores = await CodeExecutionSignal(timeout_s=5).score(query, _cands(task, [slow]), _meter())
    finally:
        t.cancel()
    assert scores == [1.0]
    assert ticks >= 5  # the loop kept ticking (every 10 ms) during the 0.5 s sandboxed run
