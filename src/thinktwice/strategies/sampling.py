"""Shared sampling steps of the sampling-based strategies: decoding params and concurrent draws."""

from __future__ import annotations

from thinktwice.strategies.base import RunContext
from thinktwice.types import Candidate, Message, Prompt, SamplingParams

__all__ = ["draw", "follow_up", "sampling_params"]


def sampling_params(
    ctx: RunContext, temperature: float, top_p: float = 1.0, max_tokens: int | None = None, **extra: object
) -> SamplingParams:
    """The task's decoding params with the strategy's temperature, top-p and token cap."""
    params = ctx.query.params.replace(temperature=temperature, top_p=top_p, **extra)
    if max_tokens is not None:
        params = params.replace(max_tokens=max_tokens)
    return params


async def draw(ctx: RunContext, n: int, params: SamplingParams, batch: int = 16) -> tuple[list[Candidate], bool]:
    """``n`` samples as concurrent calls (``batch`` per call on native-n backends, else 1 per call).

    Returns the candidates and whether the budget cut the draw short.
    """
    if n <= 0:
        return [], False
    size = batch if ctx.meter.capabilities.native_n else 1
    return await ctx.sample_batches(n, params, batch=size)


def follow_up(prompt: Prompt, *turns: Message) -> Prompt:
    """``prompt`` continued by ``turns`` (multi-turn refinement and aggregation).

    Chat prompts get the messages appended; a raw completion prompt gets them appended as text
    (``"Role: content"`` blocks), since raw prompts bypass the chat template.
    """
    if prompt.raw is None:
        return prompt.extend(*turns)
    text = prompt.raw + prompt.assistant_prefix
    for m in turns:
        text += f"\n\n{m.role.capitalize()}: {m.content}"
    return Prompt(raw=text + "\n\nAssistant:")
