"""The worker side of :mod:`thinktwice.eval.distributed`: one backend replica, shards streamed back.

A :class:`ShardWorker` is the body of one Ray actor. It builds its task and backend from the run's
serialisable spec and runs the in-process harness (:func:`thinktwice.eval.runner.evaluate`,
:func:`thinktwice.eval.pool.draw_pool`) on each shard against a store stand-in that forwards every
write to the driver as a tuple, so the per-problem seeds and results are those of a single process.
Nothing here imports ``ray``: the driver wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from thinktwice.errors import BackendError
from thinktwice.eval.pool import PoolConfig
from thinktwice.types import Budget, Problem

__all__ = ["ShardWorker", "build_backend"]

_END = ("end",)


def build_backend(spec: dict[str, Any], api_key: str | None, concurrency: int | None) -> Any:
    """The backend of ``spec`` (the run config), built as in one process: a scripted ``handler`` named
    "module:function" is resolved by the backend itself (:func:`thinktwice.lm.scripted.resolve_handler`)."""
    from thinktwice.cli.common import backend_from_options

    opts = dict(spec.get("backend_options") or {})
    return backend_from_options(spec["backend"], base_url=spec.get("base_url"), api_key=api_key,
                                model=spec.get("model"), concurrency=concurrency, **opts)


class _Sink:
    """Stands in for the RunStore inside a shard: reads answer from the driver's snapshot, writes
    are forwarded to the driver as tuples."""

    def __init__(self, queue: asyncio.Queue[tuple[Any, ...]], counts: dict[str, int] | None = None,
                 calls: dict[str, dict[str, list[list[Any]]]] | None = None) -> None:
        self.queue, self.counts, self._calls = queue, dict(counts or {}), dict(calls or {})

    def calls(self, run_id: int, problem_id: str | None = None) -> dict[str, dict[str, list[list[Any]]]]:
        if problem_id is not None:
            return {problem_id: self._calls[problem_id]} if problem_id in self._calls else {}
        return dict(self._calls)

    def update_config(self, run_id: int, changes: Any) -> None:
        """Not forwarded: the driver records no backend facts for a Ray run (replays infer them)."""

    def put_call(self, run_id: int, problem_id: str, key: str, seq: int, samples: Sequence[Any]) -> None:
        self.queue.put_nowait(("call", problem_id, key, seq, list(samples)))

    def done_problems(self, run_id: int) -> set[str]:
        return set()

    def decisions(self, run_id: int) -> list[Any]:
        return []

    def sample_counts(self, run_id: int) -> dict[str, int]:
        return dict(self.counts)

    def put_decision(self, run_id: int, problem_id: str, decision: Any, correct: bool | None, *,
                     candidate_correct: Sequence[bool | None] | None = None) -> None:
        cc = list(candidate_correct) if candidate_correct is not None else None
        self.queue.put_nowait(("decision", problem_id, decision, correct, cc))

    def put_samples(self, run_id: int, problem_id: str, samples: Sequence[Any], *, answers: Sequence[str | None],
                    correct: Sequence[bool | None], start: int = 0, stage: str = "sample") -> None:
        self.queue.put_nowait(("samples", problem_id, start, list(samples), list(answers), list(correct), stage))

    def add_event(self, run_id: int, kind: str, message: str, problem_id: str | None = None, *,
                  detail: str | None = None) -> None:
        self.queue.put_nowait(("event", problem_id, kind, message, detail))


class ShardWorker:
    """The body of one Ray actor: one backend replica, shards run one at a time.

    Its ``run_*`` methods are streaming generators: the first item is ``("pid", pid)``, then lists
    of forwarded store writes as they happen.
    """

    def __init__(self, spec: dict[str, Any], api_key: str | None, concurrency: int) -> None:
        from thinktwice.registry import tasks

        self.spec = spec
        self.task = tasks.create(spec["task"], **spec.get("task_options", {}))
        self.backend = build_backend(spec, api_key, concurrency)
        self.loop = asyncio.new_event_loop()

    def pid(self) -> int:
        return os.getpid()

    def run_eval(self, problems: list[Problem], seed: int, concurrency: int,
                 budget: Budget | None, calls: dict[str, Any] | None = None) -> Any:
        from thinktwice.eval.runner import evaluate
        from thinktwice.strategies import create_strategy

        strategy = create_strategy(self.spec["strategy"], **self.spec.get("strategy_options", {}))

        async def work(sink: _Sink) -> None:
            try:
                await evaluate(self.task, strategy, self.backend, problems, store=sink, run_id=0,  # type: ignore[arg-type]
                               budget=budget, concurrency=concurrency, seed=seed)
            except BackendError as e:
                if "every problem failed" not in str(e):  # the per-problem failures were forwarded
                    raise

        yield from self._stream(work, None, calls)

    def run_pool(self, problems: list[Problem], counts: dict[str, int], config: PoolConfig) -> Any:
        from thinktwice.eval.pool import draw_pool

        async def work(sink: _Sink) -> None:
            await draw_pool(self.task, self.backend, problems, sink, 0, config)  # type: ignore[arg-type]

        yield from self._stream(work, counts)

    def _stream(self, work: Callable[[_Sink], Any], counts: dict[str, int] | None,
                calls: dict[str, Any] | None = None) -> Any:
        loop = self.loop
        yield [("pid", os.getpid())]
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        sink = _Sink(queue, counts, calls)

        async def main() -> None:
            try:
                await work(sink)
            finally:
                queue.put_nowait(_END)

        async def drain() -> list[tuple[Any, ...]]:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            return items

        job = loop.create_task(main())
        while True:
            items = loop.run_until_complete(drain())
            end = items[-1] is _END
            if end:
                items.pop()
            if items:
                yield items
            if end:
                break
        loop.run_until_complete(job)  # re-raises the shard's error, if any
