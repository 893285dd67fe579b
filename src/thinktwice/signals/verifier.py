"""External verifiers as signals: run the candidate's code against tests, or ask a reward model.

``code-exec`` scores 1.0 when the candidate's program passes the problem's tests in the sandbox
(execution feedback as in CodeT, arXiv 2207.10397, and AlphaCode-style filtering), else 0.0. It
needs the tests (``problem.meta["test"]`` and ``["entry_point"]``, as HumanEval provides), so it
declares ``"gold"``: it is an oracle-style verifier, not a self-evaluation.

``reward-model`` POSTs ``{"question": ..., "response": ...}`` to a URL and reads a float score
(an outcome reward model served over HTTP). Neither calls the language model, so neither adds to
the Meter's bill; their own cost is wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from thinktwice.errors import BackendError, BackendUnavailable, ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate

if TYPE_CHECKING:
    from thinktwice.verify.sandbox import Isolation, SandboxConfig

__all__ = ["CodeExecutionSignal", "RewardModelConfig", "RewardModelSignal"]

log = logging.getLogger(__name__)


class CodeExecutionSignal:
    """1.0 if the candidate's code passes the problem's tests in the sandbox, 0.0 otherwise.

    Identical programs run once. Sandboxes run in worker threads, ``max_parallel`` at a time,
    so the event loop is never blocked. A problem without tests is a ConfigError. ``isolation`` is
    the sandbox's ("bwrap" or "weak"); None follows the task's ``sandbox`` option (so ``-T
    sandbox=weak`` weakens both grading and this signal), else "bwrap".
    """

    name = "code-exec"
    requires: frozenset[str] = frozenset({"gold"})
    needs_model = False

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, max_parallel: int | None = None,
                 isolation: str | None = None) -> None:
        from thinktwice.verify.sandbox import SandboxConfig

        self.isolation = isolation
        chosen = cast("Isolation", isolation or "bwrap")  # SandboxConfig rejects other names
        self.sandbox = SandboxConfig(timeout_s=timeout_s, memory_mb=memory_mb, isolation=chosen)
        self.max_parallel = max_parallel or max(1, os.cpu_count() or 1)
        if self.max_parallel < 1:
            raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")

    def _program(self, query: Query, cand: Candidate) -> str | None:
        from thinktwice.tasks.code import build_program

        code = cand.answer
        if code is None:
            code = query.answers.extract(cand.sample.text)
        if code is None or not code.strip():
            return None
        return build_program(code, query.problem)

    def config_for(self, query: Query) -> SandboxConfig:
        """The sandbox for ``query``: this signal's isolation, else the task's, else bwrap."""
        task_isolation = getattr(query.answers, "sandbox", None)
        if self.isolation is not None or not isinstance(task_isolation, str):
            return self.sandbox
        if task_isolation == self.sandbox.isolation:
            return self.sandbox
        return dataclasses.replace(self.sandbox, isolation=cast("Isolation", task_isolation))

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        from thinktwice.verify.sandbox import run_sandboxed

        meta = query.problem.meta
        if "test" not in meta or "entry_point" not in meta:
            raise ConfigError(
                f"signal 'code-exec' needs tests: problem {query.problem.id!r} has no 'test'/'entry_point' "
                "(use a code task such as humaneval)"
            )
        config = self.config_for(query)
        programs = [self._program(query, c) for c in candidates]
        distinct = sorted({p for p in programs if p is not None})
        gate = asyncio.Semaphore(self.max_parallel)

        async def run(program: str) -> float:
            async with gate:
                res = await asyncio.to_thread(run_sandboxed, program, config=config)
            log.debug("code-exec %s: %s in %.2fs", query.problem.id, res.status, res.seconds)
            return 1.0 if res.passed else 0.0

        results = await asyncio.gather(*(run(p) for p in distinct))
        by_program = dict(zip(distinct, results))
        return [0.0 if p is None else by_program[p] for p in programs]


@dataclass(frozen=True, slots=True)
class RewardModelConfig:
    """Where and how to ask the reward model.

    ``score_field``: key of the score in a JSON object reply (a bare JSON number also works).
    ``api_key_env``: name of an environment variable holding a bearer token (never the token).
    ``retries``: extra attempts after connection errors, timeouts, 429 and 5xx, with exponential
    backoff from ``backoff_s``.
    """

    url: str = ""
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    max_concurrency: int = 8
    score_field: str = "score"
    question_field: str = "question"
    response_field: str = "response"
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"reward-model needs url=http(s)://..., got {self.url!r}")
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0 or self.max_concurrency < 1:
            raise ConfigError("reward-model needs timeout_s > 0, retries >= 0, backoff_s >= 0, max_concurrency >= 1")


class RewardModelSignal:
    """Scores each candidate's full response with an external reward model over HTTP.

    Raises BackendUnavailable when the server keeps failing and BackendError on other non-2xx
    replies or replies without a number; a reward model that cannot answer is not a zero score.
    """

    name = "reward-model"
    requires: frozenset[str] = frozenset()
    needs_model = False  # it calls an external scorer, not the model under test

    def __init__(self, config: RewardModelConfig | None = None, **options: Any) -> None:
        self.config = config or RewardModelConfig(**options)

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", **dict(self.config.headers)}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise ConfigError(f"reward-model: environment variable {self.config.api_key_env} is not set")
            h["authorization"] = f"Bearer {key}"
        return h

    def _parse(self, body: Any) -> float:
        value = body.get(self.config.score_field) if isinstance(body, dict) else body
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BackendError(
                f"reward model at {self.config.url} replied without a numeric {self.config.score_field!r}",
                backend=self.name,
            )
        return float(value)

    async def _one(self, client: Any, payload: dict[str, str]) -> float:
        import httpx

        cfg = self.config
        last = ""
        for attempt in range(cfg.retries + 1):
            if attempt:
                await asyncio.sleep(cfg.backoff_s * 2 ** (attempt - 1))
            try:
                r = await client.post(cfg.url, json=payload)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code >= 400:
                raise BackendError(f"reward model at {cfg.url} answered HTTP {r.status_code}",
                                   backend=self.name, status=r.status_code)
            try:
                body = r.json()
            except ValueError:
                raise BackendError(f"reward model at {cfg.url} replied with invalid JSON", backend=self.name) from None
            return self._parse(body)
        raise BackendUnavailable(
            f"reward model at {cfg.url} failed after {cfg.retries + 1} attempts ({last})", backend=self.name
        )

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        import httpx

        cfg = self.config
        gate = asyncio.Semaphore(cfg.max_concurrency)
        async with httpx.AsyncClient(timeout=cfg.timeout_s, headers=self._headers()) as client:

            async def one(c: Candidate) -> float:
                payload = {cfg.question_field: query.question, cfg.response_field: c.sample.text}
                async with gate:
                    s = await self._one(client, payload)
                return s if math.isfinite(s) else math.nan

            return list(await asyncio.gather(*(one(c) for c in candidates)))
