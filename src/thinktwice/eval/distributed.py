"""Scale-out on Ray: shard an eval or a sample pool over a cluster, stream results to one writer.

Problems are cut into shards; a pool of Ray actors, each holding one backend replica built from
the run's serialisable spec (never a live client or model), takes shards one at a time. Inside a
shard the ordinary in-process code runs unchanged (:func:`thinktwice.eval.runner.evaluate`,
:func:`thinktwice.eval.pool.draw_pool`, in :mod:`thinktwice.eval.shard_worker`) against a store
stand-in that forwards every write, so per-problem seeds, grading and usage are exactly those of
a single-process run. Each shard is a Ray streaming generator: finished decisions and sample rounds come back as they finish and the
driver alone writes them to the SQLite run store (idempotent on their keys). When an actor dies
(worker killed, node lost) the driver starts a new one and resubmits what the store still lacks,
so nothing is duplicated or lost. ``ray`` is imported inside functions only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from thinktwice.errors import BackendError, ConfigError, ThinktwiceError
from thinktwice.eval.pool import PoolConfig, PoolProgress, PoolResult
from thinktwice.eval.runner import EvalResult, ProblemResult, Progress
from thinktwice.eval.shard_worker import ShardWorker, build_backend
from thinktwice.eval.store import RunStore
from thinktwice.types import Budget, Problem, Usage

__all__ = ["RayConfig", "ShardWorker", "build_backend", "connect", "draw_pool_ray", "evaluate_ray", "shard"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RayConfig:
    """Where and how wide to run.

    ``address``: None or "local" starts (or joins) a local Ray instance with ``ray.init()``;
    "auto", "ray://host:port" or "host:port" connect to a running cluster. ``workers`` actors
    (default: cluster CPUs // ``num_cpus``, or GPUs // ``num_gpus`` when GPUs are asked for), each
    holding one backend replica; ``shards`` work units (default 4 x workers); a shard whose actor
    dies is resubmitted up to ``max_retries`` times.
    """

    address: str | None = None
    shards: int | None = None
    workers: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.shards is not None and self.shards < 1:
            raise ConfigError(f"--shards must be >= 1, got {self.shards}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"ray workers must be >= 1, got {self.workers}")
        if self.num_cpus < 0 or self.num_gpus < 0 or (self.num_cpus == 0 and self.num_gpus == 0):
            raise ConfigError("each ray worker needs num_cpus > 0 or num_gpus > 0")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")


def connect(address: str | None) -> bool:
    """Initialise Ray for ``address``; returns True when this call initialised it (so shut it down)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray package: pip install 'thinktwice[ray]'") from None
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address in (None, "", "local"):
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    return True


def shard(problems: Sequence[Problem], shards: int) -> list[list[Problem]]:
    """Contiguous, near-equal shards in problem order (empty ones dropped)."""
    k = max(1, min(shards, len(problems)))
    size, extra = divmod(len(problems), k)
    out, i = [], 0
    for j in range(k):
        m = size + (j < extra)
        out.append(list(problems[i:i + m]))
        i += m
    return [s for s in out if s]


def _retryable(e: BaseException) -> bool:
    import ray.exceptions as rx

    if isinstance(e, rx.RayTaskError) or (isinstance(e, rx.ActorDiedError) and e.actor_init_failed):
        return False  # the shard's own code failed (or the replica could not be built): retrying repeats it
    return isinstance(e, (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError,
                          rx.OwnerDiedError, rx.LocalRayletDiedError))


def _unwrap(e: BaseException) -> BaseException:
    import ray.exceptions as rx

    init_failed = isinstance(e, rx.ActorDiedError) and e.actor_init_failed
    if init_failed and e.args and isinstance(e.args[0], rx.RayTaskError):
        e = e.args[0]
    cause = getattr(e, "cause", None) if isinstance(e, rx.RayTaskError) else None
    if isinstance(cause, ThinktwiceError):
        return cause
    if init_failed:
        what = f"{type(cause).__name__}: {cause}" if cause is not None else str(e).strip().splitlines()[-1]
        return ConfigError(f"a Ray worker could not build the backend ({what})")
    return e


def _workers(cfg: RayConfig) -> int:
    import ray

    if cfg.workers is not None:
        return cfg.workers
    res = ray.cluster_resources()
    if cfg.num_gpus > 0:
        return max(1, int(res.get("GPU", 0) // cfg.num_gpus))
    return max(1, int(res.get("CPU", 1) // cfg.num_cpus))


async def _drive(
    spec: dict[str, Any], api_key: str | None, concurrency: int, cfg: RayConfig, shards: list[list[Problem]],
    remaining: Callable[[list[Problem]], tuple[list[Problem], Any]], method: str, args: Callable[[Any], tuple[Any, ...]],
    on_items: Callable[[list[tuple[Any, ...]]], None], on_pid: Callable[[int], None] | None,
    n_workers: int,
) -> None:
    """Hand shards to ``n_workers`` actors; stream each shard's items to ``on_items``; on actor death
    start a new actor and resubmit what ``remaining`` says is still missing."""
    import ray
    import ray.exceptions

    actor_cls = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=0)(ShardWorker)
    work = list(reversed(shards))

    def new_actor() -> Any:
        return actor_cls.remote(spec, api_key, concurrency)  # type: ignore[attr-defined]

    async def slot() -> None:
        actor = new_actor()
        try:
            while work:
                part = work.pop()
                failures = 0
                while True:
                    todo, extra = remaining(part)
                    if not todo:
                        break
                    gen = getattr(actor, method).options(num_returns="streaming").remote(todo, *args(extra))
                    try:
                        async for ref in gen:
                            items = await ref
                            if items and items[0][0] == "pid":
                                if on_pid is not None:
                                    on_pid(items[0][1])
                                items = items[1:]
                            if items:
                                on_items(items)
                        break
                    except ray.exceptions.RayError as e:
                        if not _retryable(e):
                            raise _unwrap(e) from None
                        failures += 1
                        if failures > cfg.max_retries:
                            raise BackendError(f"a shard failed {failures} times on Ray ({type(e).__name__}); "
                                               "giving up") from None
                        log.warning("ray worker lost (%s); resubmitting the shard's unfinished problems",
                                    type(e).__name__)
                        ray.kill(actor, no_restart=True)
                        actor = new_actor()
        finally:
            ray.kill(actor, no_restart=True)

    slots = [asyncio.ensure_future(slot()) for _ in range(max(1, min(n_workers, len(shards))))]
    try:
        await asyncio.gather(*slots)
    except BaseException:
        for s in slots:
            s.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        raise


async def evaluate_ray(
    spec: dict[str, Any],
    problems: Sequence[Problem],
    *,
    store: RunStore,
    run_id: int,
    ray_config: RayConfig,
    api_key: str | None = None,
    budget: Budget | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_worker_pid: Callable[[int], None] | None = None,
) -> EvalResult:
    """:func:`thinktwice.eval.runner.evaluate` on a Ray cluster: same seeds, same rows, one writer.

    ``spec`` is the eval run config (task, strategy, backend and their options, seed,
    concurrency = problems in flight per shard). Problems already decided in ``run_id`` are skipped.
    Ray must be initialised (see :func:`connect`).
    """
    seed, concurrency = int(spec.get("seed", 0)), int(spec.get("concurrency", 16))
    golds = {p.id: p.gold for p in problems}
    done = store.done_problems(run_id)
    finished: set[str] = set(done)
    errors: dict[str, str] = {}
    prior = [d for d in store.decisions(run_id) if d.problem_id in golds]
    counters = {"done": len(prior), "correct": sum(bool(d.correct) for d in prior), "failed": 0}
    spent = [Usage.total([d.usage for d in prior])]

    def on_items(items: list[tuple[Any, ...]]) -> None:
        for it in items:
            if it[0] == "decision":
                _, pid, decision, correct, cc = it
                if pid in finished:
                    continue
                store.put_decision(run_id, pid, decision, correct, candidate_correct=cc)
                finished.add(pid)
                counters["correct"] += int(bool(correct))
                spent[0] = spent[0] + decision.usage
            elif it[0] == "call":
                _, pid, key, seq, samples = it
                if pid not in finished:
                    store.put_call(run_id, pid, key, seq, samples)
                continue
            elif it[0] == "event":
                _, pid, kind, message, detail = it
                store.add_event(run_id, kind, message, pid, detail=detail)
                if kind == "problem-failed" and pid is not None and pid not in finished:
                    finished.add(pid)
                    errors[pid] = message
                    counters["failed"] += 1
                else:
                    continue
            else:
                continue
            counters["done"] += 1
            if on_progress is not None:
                on_progress(Progress(counters["done"], len(problems), counters["correct"], counters["failed"],
                                     spent[0]))

    todo = [p for p in problems if p.id not in done]
    if todo:
        n_workers = _workers(ray_config)
        parts = shard(todo, ray_config.shards or 4 * n_workers)
        def remaining(part: list[Problem]) -> tuple[list[Problem], Any]:
            left = [p for p in part if p.id not in finished]
            logged = store.calls(run_id)  # calls an earlier attempt paid for: the worker serves them again
            return left, {p.id: logged[p.id] for p in left if p.id in logged}

        await _drive(spec, api_key, concurrency, ray_config, parts, remaining, "run_eval",
                     lambda calls: (seed, concurrency, budget, calls), on_items, on_worker_pid, n_workers)
    rows: list[ProblemResult] = []
    by_id = {d.problem_id: d for d in store.decisions(run_id)}
    for p in problems:
        d = by_id.get(p.id)
        if d is not None:
            rows.append(ProblemResult(p.id, d.answer, p.gold, d.correct, d.usage, d.stopped_because or "done"))
        elif p.id in errors:
            rows.append(ProblemResult(p.id, None, p.gold, None, Usage(), "error", errors[p.id]))
    result = EvalResult(run_id, rows)
    if todo and result.failed == len(todo) and not prior:
        raise BackendError(f"every problem failed; first error: {result.rows[0].error if result.rows else '?'}")
    return result


async def draw_pool_ray(
    spec: dict[str, Any],
    problems: Sequence[Problem],
    store: RunStore,
    run_id: int,
    config: PoolConfig,
    *,
    ray_config: RayConfig,
    api_key: str | None = None,
    on_progress: Callable[[PoolProgress], None] | None = None,
    on_worker_pid: Callable[[int], None] | None = None,
) -> PoolResult:
    """:func:`thinktwice.eval.pool.draw_pool` on a Ray cluster; the driver stores every round."""
    t0 = time.perf_counter()
    stored = store.sample_counts(run_id)
    counts = {p.id: min(config.n, stored.get(p.id, 0)) for p in problems}
    failed: set[str] = set()
    state = {"samples": sum(counts.values()), "drawn": 0, "tokens": 0,
             "done": sum(c >= config.n for c in counts.values())}

    def report() -> None:
        if on_progress is not None:
            on_progress(PoolProgress(state["done"], len(problems), state["samples"], config.n * len(problems),
                                     state["drawn"], state["tokens"], time.perf_counter() - t0))

    def on_items(items: list[tuple[Any, ...]]) -> None:
        for it in items:
            if it[0] == "samples":
                _, pid, start, samples, answers, correct, stage = it
                have = counts.get(pid, 0)
                if start != have:  # a resubmitted shard redrawing what is stored: keep the stored prefix
                    if start > have:
                        log.warning("pool: out-of-order round for %s (start %d, have %d); dropped", pid, start, have)
                    continue
                store.put_samples(run_id, pid, samples, answers=answers, correct=correct, start=start, stage=stage)
                counts[pid] = have + len(samples)
                state["samples"] += len(samples)
                state["drawn"] += len(samples)
                state["tokens"] += sum(s.usage.completion_tokens for s in samples)
                if counts[pid] >= config.n:
                    state["done"] += 1
                report()
            elif it[0] == "event":
                _, pid, kind, message, detail = it
                store.add_event(run_id, kind, message, pid, detail=detail)
                if kind == "problem-failed" and pid is not None:
                    failed.add(pid)

    todo = [p for p in problems if counts.get(p.id, 0) < config.n]
    if todo:
        n_workers = _workers(ray_config)
        parts = shard(todo, ray_config.shards or 4 * n_workers)

        def remaining(part: list[Problem]) -> tuple[list[Problem], Any]:
            left = [p for p in part if counts.get(p.id, 0) < config.n and p.id not in failed]
            return left, {p.id: counts.get(p.id, 0) for p in left}

        await _drive(spec, api_key, config.concurrency, ray_config, parts, remaining, "run_pool",
                     lambda c: (c, config), on_items, on_worker_pid, n_workers)
    return PoolResult(run_id, len(problems), state["drawn"], tuple(sorted(failed)), state["tokens"],
                      time.perf_counter() - t0)
