"""Server-sent events in the OpenAI chunk format for decisions made by a strategy.

Headers and the first event go out at once (the role chunk of every choice in chat, an SSE comment
for completions), so clients with a first-byte timeout never wait for the decision. While the
strategy samples, each choice streams progress chunks (an empty delta whose ``thinktwice.progress``
holds the samples drawn, their cost and the answer leading the vote), and an SSE comment
(``: keep-alive``) goes out whenever nothing else did for ``keepalive_s``. Each choice then streams
as soon as its decision is made (choices finish in any order, each chunk carries its ``index``):
content chunks (with the chosen sample's ``logprobs`` when asked), a finish chunk carrying the
choice's ``thinktwice`` object, then, after every choice, a usage chunk when
``stream_options.include_usage`` asked for one, and ``data: [DONE]``. A decision that fails (or
times out) ends the stream with an ``error`` event.
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
from thinktwice.serve.logprobs import chat_logprobs, chosen_tokens, completion_logprobs, token_groups
from thinktwice.serve.tally import DecisionTally
from thinktwice.types import Decision

__all__ = ["KEEPALIVE", "sse", "stream_decisions", "text_pieces"]

logger = logging.getLogger(__name__)

_PIECE_RE = re.compile(r"(?:\s*\S+){1,4}\s*|\s+")
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def text_pieces(text: str) -> list[str]:
    """Split ``text`` into chunks of up to four words (they join back to ``text``)."""
    return _PIECE_RE.findall(text) or [""]


def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for t in tasks:
        if not t.done():
            t.cancel()


def _error_event(exc: BaseException) -> bytes:
    try:
        err = from_backend_error(exc)
    except Exception:
        logger.error("decision failed", exc_info=exc)
        err = ProxyError(500, "The proxy hit an internal error; it has been logged.", code="internal_error")
    return sse(err.body())


async def stream_decisions(
    tasks: Sequence[asyncio.Task[Decision]],
    tallies: Sequence[DecisionTally],
    progressed: asyncio.Event,
    *,
    chat: bool,
    rid: str,
    created: int,
    model: str,
    strategy: str,
    include_usage: bool,
    on_done: Callable[[list[Decision]], None],
    temperature: float | None = None,
    logprobs: int | None = None,
    keepalive_s: float = 5.0,
) -> AsyncIterator[bytes]:
    """Yield SSE bytes: the opening, progress and keep-alives while deciding, then every decision as
    it completes; ``on_done`` gets all decisions at the end. ``progressed`` is set by the tallies
    whenever a sample arrives; ``logprobs`` is the alternatives per token the client asked for."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": rid, "object": obj, "created": created, "model": model}
    index = {t: i for i, t in enumerate(tasks)}
    decided: dict[int, Decision] = {}
    pending = set(tasks)
    shown = [t.progress() for t in tallies]
    waiter: asyncio.Future[Any] | None = None
    try:
        if chat:
            for i in range(len(tasks)):
                role = {"index": i, "delta": {"role": "assistant", "content": ""}}
                yield sse({**base, "choices": [{**role, "logprobs": None, "finish_reason": None}]})
        else:
            yield b": deciding\n\n"
        while pending:
            waiter = asyncio.ensure_future(progressed.wait())
            done, _ = await asyncio.wait(
                {*pending, waiter}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            progressed.clear()  # before reading the progress: a sample arriving while we yield sets it again
            if not done:
                yield KEEPALIVE
                continue
            for t in sorted((t for t in done if t is not waiter), key=index.__getitem__):
                pending.discard(t)  # type: ignore[arg-type]
                exc = t.exception()
                if exc is not None:
                    yield _error_event(exc)
                    yield DONE
                    return
                i = index[t]  # type: ignore[index]
                decided[i] = t.result()
                for chunk in _choice_chunks(base, i, decided[i], chat, temperature, logprobs):
                    yield chunk
            for i, (t, tally) in enumerate(zip(tasks, tallies)):
                now = tally.progress()
                if t in pending and now != shown[i]:
                    shown[i] = now
                    yield sse({**base, "choices": [_progress_choice(i, now, chat)]})
        decisions = [decided[i] for i in range(len(tasks))]
        on_done(decisions)
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage_block(decisions, strategy, temperature)})
        yield DONE
    finally:
        if waiter is not None:
            waiter.cancel()
        _cancel(tasks)


def _progress_choice(i: int, progress: dict[str, Any], chat: bool) -> dict[str, Any]:
    ch: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": None}
    ch["thinktwice"] = {"progress": progress}
    ch.update({"delta": {}} if chat else {"text": ""})
    return ch


def _choice_chunks(
    base: dict[str, Any], i: int, d: Decision, chat: bool, temperature: float | None, k: int | None
) -> list[bytes]:
    tokens = chosen_tokens(d) if k is not None else None
    if tokens is not None and "".join(t.token for t in tokens) == d.response:
        pieces = []
        offset = 0
        for group in token_groups(tokens):
            text = "".join(t.token for t in group)
            lp = chat_logprobs(group, k or 0) if chat else completion_logprobs(group, k or 0, offset)
            pieces.append((text, lp))
            offset += len(text)
    else:
        pieces = [(p, None) for p in text_pieces(d.response)]
    out = []
    for text, lp in pieces:
        if chat:
            ch = {"index": i, "delta": {"content": text}, "logprobs": lp, "finish_reason": None}
        else:
            ch = {"index": i, "text": text, "logprobs": lp, "finish_reason": None}
        out.append(sse({**base, "choices": [ch]}))
    last: dict[str, Any] = {
        "index": i,
        "logprobs": None,
        "finish_reason": finish_reason(d),
        "thinktwice": choice_extension(d, temperature),
    }
    last.update({"delta": {}} if chat else {"text": ""})
    out.append(sse({**base, "choices": [last]}))
    return out
