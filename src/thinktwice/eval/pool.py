"""Drawing a sample pool: N samples per problem, stored with their token statistics, resumable.

Sampling is the expensive part; deciding is cheap (DESIGN.md, "Sample pools"). :func:`draw_pool`
fills a run of kind ``"pool"`` concurrently over problems. Within a problem, samples are drawn in
rounds (one call of n = batch on native-n backends, else ``batch`` concurrent single calls) and
each round is stored in one transaction at the next indices, so a problem's stored samples are
always a contiguous prefix: after a kill, ``store.sample_counts`` says exactly where to resume and
nothing is drawn twice or lost. Every sample carries its usage (the call's prompt tokens on the
first sample of a call), extracted answer and correctness.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from thinktwice.errors import AuthenticationError, BackendError, ConfigError
from thinktwice.eval.store import RunStore
from thinktwice.lm.base import Backend
from thinktwice.tasks.base import Task
from thinktwice.types import Problem, SamplingParams

__all__ = ["PoolConfig", "PoolProgress", "PoolResult", "create_pool_run", "draw_pool", "sample_seed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How a pool is drawn.

    ``n`` samples per problem at ``temperature`` / ``top_p``; ``max_tokens`` None keeps the task's
    default; ``batch`` samples per round of a problem; ``concurrency`` problems in flight;
    ``top_logprobs`` alternatives per token (DeepConf uses 20; capped by the backend).
    """

    n: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None
    batch: int = 16
    concurrency: int = 16
    top_logprobs: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"a pool needs n >= 1 samples per problem, got {self.n}")
        if self.batch < 1 or self.concurrency < 1:
            raise ConfigError(f"batch and concurrency must be >= 1, got {self.batch}, {self.concurrency}")
        if self.temperature <= 0:
            raise ConfigError("a pool needs temperature > 0: at temperature 0 every sample is the same")
        if self.top_logprobs < 0:
            raise ConfigError(f"top_logprobs must be >= 0, got {self.top_logprobs}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PoolProgress:
    """Passed to ``on_progress`` after each stored round."""

    problems_done: int
    problems: int
    samples: int
    total_samples: int
    drawn: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time at the rate of this session (None before the first sample)."""
        if self.drawn <= 0 or self.seconds <= 0:
            return None
        return (self.total_samples - self.samples) * self.seconds / self.drawn


@dataclass(frozen=True, slots=True)
class PoolResult:
    run_id: int
    problems: int
    samples: int
    failed: tuple[str, ...]
    completion_tokens: int
    seconds: float


def sample_seed(seed: int, problem_id: str, index: int) -> int:
    """The sampling seed of the call that draws sample ``index`` of a problem (order-independent)."""
    return zlib.crc32(f"{seed}:{problem_id}:{index}".encode()) & 0x7FFFFFFF


def create_pool_run(store: RunStore, task: Task, backend: Backend, problems: Sequence[Problem],
                    config: PoolConfig, *, spec: dict[str, object] | None = None, name: str | None = None) -> int:
    """Create a ``pool`` run recording the config, the task/prompt/grader versions and whether the backend
    returns n samples per call (``native_n``: replays then bill one call and one prompt per round)."""
    caps = getattr(backend, "capabilities", None)  # unknown when the backend lives on Ray workers only
    cfg: dict[str, object] = {**(spec or {}), "pool": config.to_dict(),
                              "prompt_version": getattr(task, "prompt_version", None),
                              "grader_version": getattr(task, "grader_version", None),
                              # what the backend could do, so replays bill calls and prompt tokens as it would
                              "native_n": None if caps is None else bool(caps.native_n and caps.max_n > 1)}
    run_id = store.create_run(kind="pool", config=cfg, task=getattr(task, "name", None),
                              task_version=getattr(task, "version", None), backend=getattr(backend, "name", None),
                              model=getattr(backend, "model", None), strategy=f"pool-{config.n}",
                              seed=config.seed, name=name)
    store.put_problems(run_id, problems)
    return run_id


async def draw_pool(
    task: Task,
    backend: Backend,
    problems: Sequence[Problem],
    store: RunStore,
    run_id: int,
    config: PoolConfig,
    *,
    on_progress: Callable[[PoolProgress], None] | None = None,
) -> PoolResult:
    """Draw the samples each problem of ``run_id`` still lacks, up to ``config.n``.

    A problem whose calls fail after the backend's retries, or that raises anything unexpected, is
    recorded as an event (with its traceback) and skipped (resume retries it); authentication and
    configuration errors (a missing capability) stop the whole draw.
    """
    have = store.sample_counts(run_id)
    caps = backend.capabilities
    params = task.params().replace(temperature=config.temperature, top_p=config.top_p, logprobs=bool(caps.logprobs),
                                   top_logprobs=min(config.top_logprobs, caps.top_logprobs))
    if config.max_tokens is not None:
        params = params.replace(max_tokens=config.max_tokens)
    total = config.n * len(problems)
    state = {"samples": sum(min(config.n, have.get(p.id, 0)) for p in problems), "tokens": 0, "drawn": 0,
             "done": sum(have.get(p.id, 0) >= config.n for p in problems)}
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(config.concurrency)
    failed: list[str] = []
    fatal: list[BaseException] = []

    def report() -> None:
        if on_progress is not None:
            on_progress(PoolProgress(state["done"], len(problems), state["samples"], total, state["drawn"],
                                     state["tokens"], time.perf_counter() - t0))

    async def one(problem: Problem) -> None:
        async with sem:
            start = have.get(problem.id, 0)
            prompt = task.prompt(problem)
            try:
                while start < config.n and not fatal:
                    m = min(config.batch, config.n - start)
                    samples = await _round(backend, prompt, params, m, start, problem.id, config.seed,
                                           native=caps.native_n and caps.max_n > 1)
                    answers = [task.extract(s.text) for s in samples]
                    correct = [task.grade(a, problem) if a is not None else False for a in answers]
                    store.put_samples(run_id, problem.id, samples, answers=answers, correct=correct, start=start)
                    start += len(samples)
                    state["samples"] += len(samples)
                    state["drawn"] += len(samples)
                    state["tokens"] += sum(s.usage.completion_tokens for s in samples)
                    report()
            except (AuthenticationError, ConfigError) as e:  # the same for every problem: stop the draw
                fatal.append(e)
                return
            except BackendError as e:
                msg = f"{type(e).__name__}: {e}"
                log.warning("pool: problem %s failed: %s", problem.id, msg)
                store.add_event(run_id, "problem-failed", msg, problem.id)
                failed.append(problem.id)
                return
            except Exception as e:  # noqa: BLE001 (a bug in one problem must not end the draw for the others)
                msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                log.error("pool: problem %s failed with an unexpected error (recorded with its traceback): %s",
                          problem.id, msg)
                store.add_event(run_id, "problem-failed", msg, problem.id, detail=traceback.format_exc())
                failed.append(problem.id)
                return
            if start >= config.n:
                state["done"] += 1
                report()

    await asyncio.gather(*(one(p) for p in problems))
    if fatal:
        raise fatal[0]
    # the backend may have learnt that its server ignores n (the openai backend then sends separate
    # requests): record what it could actually do, so replays bill calls as they were made
    learnt = backend.capabilities
    if state["drawn"] and not (learnt.native_n and learnt.max_n > 1) and caps.native_n and caps.max_n > 1:
        store.update_config(run_id, {"native_n": False})
    return PoolResult(run_id, len(problems), state["drawn"], tuple(failed), state["tokens"],
                      time.perf_counter() - t0)


async def _round(backend: Backend, prompt: object, params: SamplingParams, m: int, start: int, problem_id: str,
                 seed: int, *, native: bool) -> list:  # type: ignore[type-arg]
    """``m`` samples for indices start..start+m-1: one native-n call, else m concurrent single calls."""
    if native:
        got = await backend.sample(prompt, params.replace(seed=sample_seed(seed, problem_id, start)), m)  # type: ignore[arg-type]
        if len(got) != m:
            raise BackendError(f"backend returned {len(got)} samples for n={m}", backend=backend.name)
        return list(got)
    calls = [backend.sample(prompt, params.replace(seed=sample_seed(seed, problem_id, start + i)), 1)  # type: ignore[arg-type]
             for i in range(m)]
    results = await asyncio.gather(*calls)
    return [r[0] for r in results]
