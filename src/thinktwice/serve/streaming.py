"""Server-sent events in the OpenAI chunk format for decisions made by a strategy.

Each choice streams as soon as its decision is made (choices finish in any order, each chunk
carries its ``index``): a role chunk, content chunks, a finish chunk carrying the choice's
``thinktwice`` object, then, after every choice, a usage chunk when
``stream_options.include_usage`` asked for one, and ``data: [DONE]``. A decision that fails
after streaming began ends the stream with an ``error`` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from thinktwice.serve.decide import choice_extension, finish_reason, usage_block
from thinktwice.serve.errors import ProxyError, from_backend_error
from thinktwice.types import Decision

__all__ = ["first_ready", "sse", "stream_decisions", "text_pieces"]

logger = logging.getLogger(__name__)

_PIECE_RE = re.compile(r"(?:\s*\S+){1,4}\s*|\s+")
DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def text_pieces(text: str) -> list[str]:
    """Split ``text`` into chunks of up to four words (they join back to ``text``)."""
    return _PIECE_RE.findall(text) or [""]


async def first_ready(tasks: Sequence[asyncio.Task[Decision]], timeout_s: float) -> None:
    """Wait until one decision is done; raise its error (as a ProxyError) and cancel the rest on failure."""
    done, _ = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if not done:
        _cancel(tasks)
        raise ProxyError(504, "No decision was made in time.", code="upstream_timeout")
    for t in done:
        if t.exception() is not None:
            _cancel(tasks)
            raise from_backend_error(t.exception())  # type: ignore[arg-type]


def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for t in tasks:
        if not t.done():
            t.cancel()


async def stream_decisions(
    tasks: Sequence[asyncio.Task[Decision]],
    *,
    chat: bool,
    rid: str,
    created: int,
    model: str,
    strategy: str,
    include_usage: bool,
    on_done: Callable[[list[Decision]], None],
) -> AsyncIterator[bytes]:
    """Yield SSE bytes for every decision as it completes; ``on_done`` gets all decisions at the end."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": rid, "object": obj, "created": created, "model": model}
    index = {t: i for i, t in enumerate(tasks)}
    decided: dict[int, Decision] = {}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in sorted(done, key=index.__getitem__):
                exc = t.exception()
                if exc is not None:
                    try:
                        err = from_backend_error(exc)
                    except Exception:
                        logger.error("decision failed", exc_info=exc)
                        err = ProxyError(500, "The proxy hit an internal error; it has been logged.")
                    yield sse(err.body())
                    yield DONE
                    return
                i = index[t]
                decided[i] = t.result()
                for chunk in _choice_chunks(base, i, decided[i], chat):
                    yield chunk
        decisions = [decided[i] for i in range(len(tasks))]
        on_done(decisions)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage_block(decisions, strategy)})
        yield DONE
    finally:
        _cancel(tasks)


def _choice_chunks(base: dict[str, Any], i: int, d: Decision, chat: bool) -> list[bytes]:
    out = []
    if chat:
        out.append(
            sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
    for piece in text_pieces(d.response):
        if chat:
            ch = {"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
        else:
            ch = {"index": i, "text": piece, "logprobs": None, "finish_reason": None}
        out.append(sse({**base, "choices": [ch]}))
    last: dict[str, Any] = {
        "index": i,
        "logprobs": None,
        "finish_reason": finish_reason(d),
        "thinktwice": choice_extension(d),
    }
    last.update({"delta": {}} if chat else {"text": ""})
    out.append(sse({**base, "choices": [last]}))
    return out
