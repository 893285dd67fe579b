"""The chosen sample's token statistics in the OpenAI ``logprobs`` shapes (chat and legacy completions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from thinktwice.types import Decision, TokenStat

__all__ = ["chat_logprobs", "chosen_tokens", "completion_logprobs", "token_groups"]

_FLOOR = -9999.0  # what OpenAI reports for a probability that underflows; JSON has no -inf or NaN


def _lp(v: float) -> float:
    return v if math.isfinite(v) else _FLOOR


def chosen_tokens(d: Decision) -> tuple[TokenStat, ...] | None:
    """The token statistics of the chosen candidate, when the response is exactly its text."""
    if d.text is not None or d.chosen is None or not 0 <= d.chosen < len(d.candidates):
        return None
    return d.candidates[d.chosen].sample.tokens


def chat_logprobs(tokens: Sequence[TokenStat], k: int) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat completion, with up to ``k`` alternatives per token."""
    return {
        "content": [
            {
                "token": t.token,
                "logprob": _lp(t.logprob),
                "bytes": list(t.token.encode("utf-8", "replace")),
                "top_logprobs": [
                    {"token": a, "logprob": _lp(v), "bytes": list(a.encode("utf-8", "replace"))}
                    for a, v in t.top[:k]
                ],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: Sequence[TokenStat], k: int, offset: int = 0) -> dict[str, Any]:
    """``choices[i].logprobs`` of a legacy completion (tokens, token_logprobs, top_logprobs, text_offset)."""
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [_lp(t.logprob) for t in tokens],
        "top_logprobs": [{a: _lp(v) for a, v in t.top[:k]} for t in tokens],
        "text_offset": offsets,
    }


def token_groups(tokens: Sequence[TokenStat], size: int = 4) -> list[Sequence[TokenStat]]:
    """Consecutive runs of ``size`` tokens (the content chunks of a stream that carries logprobs)."""
    return [tokens[i : i + size] for i in range(0, len(tokens), size)] or [()]
