"""Per-request strategy routing, concurrent decisions, and the OpenAI-shaped results.

A request picks its strategy with the ``thinktwice`` body field (a name, or an object with
``strategy``, ``budget_tokens``, ``fallback`` and strategy options) or a model name
``STRATEGY/MODEL``; the server flags give the defaults. A model prefix that is not a strategy name
is kept as part of the model name (``meta-llama/Llama-3``), while an unknown name in the
``thinktwice`` field is a 400 listing the valid ones. ``n`` choices are ``n`` independent decisions
run concurrently; the response's usage sums every upstream call of every decision.

Temperature: a request's temperature above 0 becomes the strategy's sampling temperature. A
temperature of 0 (greedy decoding) is honoured by ``greedy`` and ``passthrough`` only: a strategy
that compares samples keeps its own temperature, since N samples at temperature 0 are N copies of
the greedy answer at N times its cost. The temperature used is reported per choice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.base import Backend
from thinktwice.registry import strategies
from thinktwice.serve.budget import check_options, is_sampling
from thinktwice.serve.config import PASSTHROUGH, ServeConfig
from thinktwice.serve.errors import ProxyError
from thinktwice.serve.schemas import ThinktwiceOptions
from thinktwice.strategies import create_strategy
from thinktwice.strategies.base import BaseStrategy, RunContext, Strategy, Verdict
from thinktwice.tasks.base import AnswerFormat, Query
from thinktwice.types import Budget, Decision, Problem, Prompt, SamplingParams, Usage

__all__ = [
    "Backends",
    "PlainSample",
    "Route",
    "build_strategy",
    "choice_extension",
    "factory_of",
    "finish_reason",
    "resolve",
    "run_decisions",
    "strategy_temperature",
    "usage_block",
    "valid_strategies",
    "wants_logprobs",
]

_FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}
# Strategies that vote on answers alone: their samples are drawn without token logprobs, which
# keeps upstream responses several times smaller. Every other strategy gets logprobs.
_NO_TOKEN_STATS = frozenset({"self-consistency", "adaptive-consistency", "esc", PASSTHROUGH})


def wants_logprobs(strategy: str) -> bool:
    """True unless ``strategy`` is known to vote without token statistics."""
    return strategy.partition(":")[0] not in _NO_TOKEN_STATS


@dataclass(frozen=True)
class Route:
    """Where a request goes: a strategy spec (or passthrough), the upstream model, options, budget.

    ``client_options`` are the options the request itself set (checked against the server's caps);
    ``fallback`` says what to do with a request the strategy cannot serve: "passthrough" forwards
    it, "error" (or None) answers 400.
    """

    strategy: str
    model: str | None
    options: Mapping[str, Any]
    budget_tokens: int
    client_options: Mapping[str, Any] = field(default_factory=dict)
    fallback: str | None = None

    @property
    def passthrough(self) -> bool:
        return self.strategy == PASSTHROUGH


@dataclass(frozen=True)
class PlainSample(BaseStrategy):
    """One sample with the request's own decoding settings (passthrough without an HTTP upstream)."""

    name: ClassVar[str] = PASSTHROUGH

    async def decide(self, ctx: RunContext) -> Verdict:
        cands = await ctx.sample(1, ctx.query.params)
        return Verdict(cands[0].answer, None, cands, 0)


def valid_strategies() -> list[str]:
    return sorted([*strategies.names(), PASSTHROUGH])


def _known(spec: str) -> bool:
    return spec == PASSTHROUGH or spec.partition(":")[0] in strategies


def factory_of(strategy: str) -> Any:
    """The registered class (or factory) of a strategy spec; None for passthrough."""
    return None if strategy == PASSTHROUGH else strategies.get(strategy.partition(":")[0])


def resolve(model: str | None, field: ThinktwiceOptions | str | None, config: ServeConfig) -> Route:
    """The route of one request (see the module docstring for the precedence)."""
    strategy: str | None = None
    options: dict[str, Any] = {}
    budget = config.budget_tokens
    fallback = getattr(config, "fallback", None)
    if isinstance(field, str):
        strategy = field
    elif field is not None:
        strategy = field.strategy
        options = field.strategy_options()
        fallback = field.fallback or fallback
        if field.budget_tokens is not None:
            if field.budget_tokens > config.budget_tokens:
                raise ProxyError(
                    400,
                    f"thinktwice.budget_tokens {field.budget_tokens} is above this server's "
                    f"cap of {config.budget_tokens}.",
                    param="thinktwice.budget_tokens",
                )
            budget = field.budget_tokens
    if strategy is not None and not _known(strategy):
        raise ProxyError(
            400,
            f"Unknown strategy {strategy!r}. Valid strategies: {', '.join(valid_strategies())}.",
            param="thinktwice.strategy",
            code="unknown_strategy",
        )
    if model:
        prefix, sep, rest = model.partition("/")
        if sep and _known(prefix):
            strategy = strategy or prefix
            model = rest or None
        elif _known(model):
            strategy, model = strategy or model, None
    client = dict(options)
    if strategy is None or strategy == config.strategy:
        strategy = config.strategy
        options = {**config.strategy_options, **options}
    if strategy != PASSTHROUGH:
        check_options(client, config)
    return Route(strategy, model or config.model, options, budget, client, fallback)


def build_strategy(route: Route, temperature: float | None) -> Strategy:
    """Build the route's strategy; a request temperature above 0 applies when the strategy has one."""
    if route.passthrough:
        return PlainSample()
    options = dict(route.options)
    factory = factory_of(route.strategy)
    if route.client_options.get("temperature") == 0 and is_sampling(factory):
        raise ProxyError(
            400,
            f"thinktwice.temperature=0 makes every sample of {route.strategy!r} the same answer at "
            "many times its cost; use the 'greedy' strategy for greedy decoding.",
            param="thinktwice.temperature",
        )
    if temperature and "temperature" not in options and dataclasses.is_dataclass(factory):
        if any(f.name == "temperature" for f in dataclasses.fields(factory)):
            options["temperature"] = temperature
    try:
        return create_strategy(route.strategy, **options)
    except (ConfigError, TypeError, ValueError) as e:
        raise ProxyError(
            400, f"Invalid options for strategy {route.strategy!r}: {e}", param="thinktwice"
        ) from None


def strategy_temperature(strategy: Strategy, params: SamplingParams) -> float:
    """The temperature ``strategy`` samples at for a query with ``params`` (greedy: 0)."""
    if getattr(strategy, "name", "") == "greedy":
        return 0.0
    t = getattr(strategy, "temperature", None)
    return float(t) if isinstance(t, (int, float)) else params.temperature


class Backends:
    """The default backend plus one per other model name asked for, built lazily.

    At most ``limit`` are kept; a new name evicts the least recently used idle one (closed once no
    request holds it), and when all are busy the request gets a backend of its own, closed after
    it. Junk model names therefore cost an eviction each and never lock legitimate ones out.
    """

    def __init__(self, default: Backend, factory: Callable[[str], Backend] | None, limit: int = 16) -> None:
        self.default, self.factory, self.limit = default, factory, limit
        self._by_model: collections.OrderedDict[str, Backend] = collections.OrderedDict()
        self._leases: collections.Counter[int] = collections.Counter()

    @property
    def models(self) -> list[str]:
        """The model names with a kept backend, least recently used first."""
        return list(self._by_model)

    @contextlib.asynccontextmanager
    async def lease(self, model: str | None) -> AsyncIterator[Backend]:
        """The backend for ``model``, held for the duration of a request."""
        if self.factory is None or model is None or model == self.default.model:
            yield self.default
            return
        b = self._by_model.get(model)
        transient = False
        if b is not None:
            self._by_model.move_to_end(model)
        else:
            await self._make_room()
            b = self.factory(model)
            if len(self._by_model) < self.limit:
                self._by_model[model] = b
            else:
                transient = True
        self._leases[id(b)] += 1
        try:
            yield b
        finally:
            self._leases[id(b)] -= 1
            if self._leases[id(b)] <= 0:
                del self._leases[id(b)]
                if transient:
                    await b.aclose()

    async def _make_room(self) -> None:
        while len(self._by_model) >= self.limit:
            idle = next((m for m, b in self._by_model.items() if not self._leases[id(b)]), None)
            if idle is None:
                return
            await self._by_model.pop(idle).aclose()

    async def aclose(self) -> None:
        for b in [self.default, *self._by_model.values()]:
            await b.aclose()
        self._by_model.clear()


def make_query(
    rid: str, prompt: Prompt, question: str, answers: AnswerFormat, params: SamplingParams
) -> Query:
    return Query(problem=Problem(id=rid, question=question), prompt=prompt, answers=answers, params=params)


async def run_decisions(
    strategy: Strategy,
    queries: Sequence[Query],
    backends: Sequence[Backend],
    n: int,
    budget_tokens: int,
    seed: int | None,
    timeout_s: float,
    max_samples: int | None = None,
) -> list[asyncio.Task[Decision]]:
    """Start ``n`` independent decisions per query (seeds ``seed + i``), decision ``j`` sampling
    through ``backends[j]``; their tasks, in choice order."""
    base = seed if seed is not None else secrets.randbelow(2**31)
    budget = Budget(max_tokens=budget_tokens, max_samples=max_samples)

    async def one(q: Query, i: int, backend: Backend) -> Decision:
        return await asyncio.wait_for(strategy.run(q, backend, budget, seed=base + i), timeout_s)

    jobs = [(q, i) for q in queries for i in range(n)]
    return [asyncio.ensure_future(one(q, i, backends[j])) for j, (q, i) in enumerate(jobs)]


def finish_reason(d: Decision) -> str:
    if d.chosen is not None and 0 <= d.chosen < len(d.candidates):
        fr = d.candidates[d.chosen].sample.finish_reason
        return fr if fr in _FINISH else "stop"
    return "stop" if d.response else "length"


def _usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "calls": u.calls,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
    }


def choice_extension(d: Decision, temperature: float | None = None) -> dict[str, Any]:
    """The per-choice ``thinktwice`` object: cost, stages, chosen candidate, vote shares, confidence,
    and the sampling temperature used."""
    total = sum(d.votes.values())
    return {
        "strategy": d.strategy,
        "temperature": temperature,
        "calls": d.usage.calls,
        "prompt_tokens": d.usage.prompt_tokens,
        "completion_tokens": d.usage.completion_tokens,
        "stages": {k: _usage_dict(v) for k, v in d.stages.items()},
        "samples": len(d.candidates),
        "chosen": d.chosen,
        "answer": d.answer,
        "votes": {k: v / total for k, v in d.votes.items()} if total > 0 else {},
        "confidence": d.confidence,
        "stopped_because": d.stopped_because,
    }


def usage_block(
    decisions: Sequence[Decision], strategy: str, temperature: float | None = None
) -> dict[str, Any]:
    """OpenAI ``usage`` summed over every decision, with the ``thinktwice`` extension."""
    u = Usage.total([d.usage for d in decisions])
    stages: dict[str, Usage] = {}
    for d in decisions:
        for k, v in d.stages.items():
            stages[k] = stages.get(k, Usage()) + v
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "thinktwice": {
            "strategy": strategy,
            "temperature": temperature,
            "calls": u.calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "stages": {k: _usage_dict(v) for k, v in stages.items()},
            "choices": [choice_extension(d, temperature) for d in decisions],
        },
    }
