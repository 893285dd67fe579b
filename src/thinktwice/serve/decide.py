"""Per-request strategy routing, concurrent decisions, and the OpenAI-shaped results.

A request picks its strategy with the ``thinktwice`` body field (a name, or an object with
``strategy``, ``budget_tokens`` and strategy options) or a model name ``STRATEGY/MODEL``; the
server flags give the defaults. A model prefix that is not a strategy name is kept as part of
the model name (``meta-llama/Llama-3``), while an unknown name in the ``thinktwice`` field is a
400 listing the valid ones. ``n`` choices are ``n`` independent decisions run concurrently; the
response's usage sums every upstream call of every decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.base import Backend
from thinktwice.registry import strategies
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
    "finish_reason",
    "resolve",
    "run_decisions",
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
    """Where a request goes: a strategy spec (or passthrough), the upstream model, options, budget."""

    strategy: str
    model: str | None
    options: Mapping[str, Any]
    budget_tokens: int

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


def resolve(model: str | None, field: ThinktwiceOptions | str | None, config: ServeConfig) -> Route:
    """The route of one request (see the module docstring for the precedence)."""
    strategy: str | None = None
    options: dict[str, Any] = {}
    budget = config.budget_tokens
    if isinstance(field, str):
        strategy = field
    elif field is not None:
        strategy = field.strategy
        options = field.strategy_options()
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
    if strategy is None or strategy == config.strategy:
        strategy = config.strategy
        options = {**config.strategy_options, **options}
    return Route(strategy, model or config.model, options, budget)


def build_strategy(route: Route, temperature: float | None) -> Strategy:
    """Build the route's strategy; the request's temperature applies when the strategy has one."""
    if route.passthrough:
        return PlainSample()
    options = dict(route.options)
    factory = strategies.get(route.strategy.partition(":")[0])
    if temperature is not None and "temperature" not in options and dataclasses.is_dataclass(factory):
        if any(f.name == "temperature" for f in dataclasses.fields(factory)):
            options["temperature"] = temperature
    try:
        return create_strategy(route.strategy, **options)
    except (ConfigError, TypeError, ValueError) as e:
        raise ProxyError(
            400, f"Invalid options for strategy {route.strategy!r}: {e}", param="thinktwice"
        ) from None


class Backends:
    """The default backend plus one per other model name asked for (built lazily, at most ``limit``)."""

    def __init__(self, default: Backend, factory: Callable[[str], Backend] | None, limit: int = 16) -> None:
        self.default, self.factory, self.limit = default, factory, limit
        self._by_model: dict[str, Backend] = {}

    def get(self, model: str | None) -> Backend:
        if self.factory is None or model is None or model == self.default.model:
            return self.default
        b = self._by_model.get(model)
        if b is None:
            if len(self._by_model) >= self.limit:
                raise ProxyError(
                    400, f"This server already serves {self.limit} distinct models.", param="model"
                )
            b = self._by_model[model] = self.factory(model)
        return b

    async def aclose(self) -> None:
        for b in [self.default, *self._by_model.values()]:
            await b.aclose()


def make_query(
    rid: str, prompt: Prompt, question: str, answers: AnswerFormat, params: SamplingParams
) -> Query:
    return Query(problem=Problem(id=rid, question=question), prompt=prompt, answers=answers, params=params)


async def run_decisions(
    strategy: Strategy,
    queries: Sequence[Query],
    backend: Backend,
    n: int,
    budget_tokens: int,
    seed: int | None,
    timeout_s: float,
    max_samples: int | None = None,
) -> list[asyncio.Task[Decision]]:
    """Start ``n`` independent decisions per query (seeds ``seed + i``); their tasks, in choice order."""
    base = seed if seed is not None else secrets.randbelow(2**31)
    budget = Budget(max_tokens=budget_tokens, max_samples=max_samples)

    async def one(q: Query, i: int) -> Decision:
        return await asyncio.wait_for(strategy.run(q, backend, budget, seed=base + i), timeout_s)

    return [asyncio.ensure_future(one(q, i)) for q in queries for i in range(n)]


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


def choice_extension(d: Decision) -> dict[str, Any]:
    """The per-choice ``thinktwice`` object: cost, stages, chosen candidate, vote shares, confidence."""
    total = sum(d.votes.values())
    return {
        "strategy": d.strategy,
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


def usage_block(decisions: Sequence[Decision], strategy: str) -> dict[str, Any]:
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
            "calls": u.calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "stages": {k: _usage_dict(v) for k, v in stages.items()},
            "choices": [choice_extension(d) for d in decisions],
        },
    }
