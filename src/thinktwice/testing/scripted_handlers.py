"""Deterministic handlers for the scripted backend that survive being named in a run spec.

A handler named as ``-B handler=thinktwice.testing.scripted_handlers:seeded_answer`` is imported by
every process that builds the backend (Ray workers included), so sharded and in-process runs of
the same spec and seed produce the same replies.
"""

from __future__ import annotations

import zlib

from thinktwice.types import Prompt, SamplingParams

__all__ = ["seeded_answer"]


def seeded_answer(prompt: Prompt, params: SamplingParams, index: int) -> str:
    """A reply that depends only on the prompt, the call's seed and the sample's index in the call."""
    h = zlib.crc32(f"{prompt.text()}|{params.seed}|{index}".encode())
    return f"Let me think. The answer is {h % 4 + 17}."
