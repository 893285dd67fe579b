"""Running the decisions of one request: one billing tally per decision, the request's deadline,
and cancelling everything when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from thinktwice.serve.decide import Route, run_decisions
from thinktwice.serve.errors import from_backend_error
from thinktwice.serve.schemas import now
from thinktwice.serve.streaming import stream_decisions
from thinktwice.serve.tally import DecisionTally
from thinktwice.strategies.base import Strategy
from thinktwice.tasks.base import Query
from thinktwice.types import Decision, Usage

__all__ = ["RequestRun", "billers", "remaining_s"]


def billers(request: Request) -> tuple[Callable[[Usage], None], Callable[[int, int, int], None]]:
    """Bill upstream work to /metrics and to the client key's token rate limit."""
    st = request.app.state
    limits = getattr(st, "limits", None)

    def bill_raw(calls: int, prompt: int, completion: int) -> None:
        st.metrics.upstream_raw(calls, prompt, completion)
        if limits is not None and completion:
            limits.charge(request.scope, completion)

    def bill(u: Usage) -> None:
        bill_raw(u.calls, u.prompt_tokens, u.completion_tokens)

    return bill, bill_raw


def remaining_s(request: Request) -> float:
    """Seconds left of the request's ``request_timeout_s`` (its clock starts at the first call)."""
    st = request.app.state
    now_s = asyncio.get_running_loop().time()
    started = request.scope.setdefault("state", {}).setdefault("thinktwice.started", now_s)
    return max(0.001, st.config.request_timeout_s - (now_s - started))


@dataclass
class RequestRun:
    """The decisions of one request: ``n`` per query, each through its own billing tally."""

    request: Request
    strategy: Strategy
    queries: list[Query]
    route: Route
    n: int
    seed: int | None
    name: str
    temperature: float

    async def _start(
        self, backend: Any, progressed: asyncio.Event | None
    ) -> tuple[list[asyncio.Task[Decision]], list[DecisionTally]]:
        st = self.request.app.state
        bill, _ = billers(self.request)
        answers = st.answers if progressed is not None else None
        on_progress = progressed.set if progressed is not None else None
        tallies = [
            DecisionTally(backend, bill, answers, on_progress) for _ in range(len(self.queries) * self.n)
        ]
        tasks = await run_decisions(
            self.strategy,
            self.queries,
            tallies,
            self.n,
            self.route.budget_tokens,
            self.seed,
            remaining_s(self.request),
            st.config.max_samples,
        )
        return tasks, tallies

    def _account(self, decisions: list[Decision], tallies: list[DecisionTally]) -> None:
        self.request.app.state.metrics.decisions[self.name] += len(decisions)
        for d, t in zip(decisions, tallies):
            t.settle(d)

    async def complete(self) -> list[Decision] | None:
        """Every decision, or None (all cancelled) when the client disconnected first."""
        st = self.request.app.state
        async with st.backends.lease(self.route.model) as backend:
            tasks, tallies = await self._start(backend, None)
            results = await _unless_disconnected(self.request, tasks)
        if results is None:
            st.metrics.disconnects += 1
            return None
        for r in results:
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                err = from_backend_error(r)
                st.metrics.upstream_errors[err.status] += 1
                raise err
        decisions: list[Decision] = list(results)
        self._account(decisions, tallies)
        return decisions

    async def stream(
        self, *, chat: bool, rid: str, model: str, include_usage: bool, logprobs: int | None
    ) -> AsyncIterator[bytes]:
        """The SSE body; the backend is held until the stream ends."""
        st = self.request.app.state
        progressed = asyncio.Event()
        async with st.backends.lease(self.route.model) as backend:
            tasks, tallies = await self._start(backend, progressed)
            events = stream_decisions(
                tasks,
                tallies,
                progressed,
                chat=chat,
                rid=rid,
                created=now(),
                model=model,
                strategy=self.name,
                include_usage=include_usage,
                on_done=lambda ds: self._account(ds, tallies),
                temperature=self.temperature,
                logprobs=logprobs,
                keepalive_s=getattr(st.config, "stream_keepalive_s", 5.0),
            )
            try:
                async for chunk in events:
                    yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                st.metrics.disconnects += 1
                raise
            finally:
                await events.aclose()


async def _unless_disconnected(request: Request, tasks: list[asyncio.Task[Decision]]) -> list[Any] | None:
    """Every decision's result (or error); None, with every decision cancelled, if the client left."""
    gathered = asyncio.gather(*tasks, return_exceptions=True)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({gathered, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if gathered.done():
        return gathered.result()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return None


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (after the body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
