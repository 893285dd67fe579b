"""The Backend protocol every model implementation follows, and helpers shared by backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, TokenStat

__all__ = ["Backend", "TokenMonitor", "estimate_tokens"]

TokenMonitor = Callable[[int, int, TokenStat], bool]
"""Called as ``monitor(sequence_index, position, stat)`` after each generated token; returning
True stops that sequence (its finish_reason becomes ``"monitor"``). Used by DeepConf online."""


@runtime_checkable
class Backend(Protocol):
    """An async source of samples.

    ``sample`` returns exactly ``n`` samples (or raises a BackendError) for one prompt. Each
    sample's ``usage`` is its share of the call (see :class:`~thinktwice.types.Sample`).
    ``count_tokens`` gives the prompt's token count as the backend would bill it (exact where the
    tokenizer is local, estimated otherwise). ``monitor`` is honoured only when
    ``capabilities.monitor`` is True; other backends ignore it.
    """

    name: str
    model: str
    capabilities: Capabilities

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]: ...

    def count_tokens(self, prompt: Prompt) -> int: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token, at least 1 for non-empty text)."""
    return 0 if not text else max(1, (len(text) + 3) // 4)
