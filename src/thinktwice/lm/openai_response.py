"""Reading an OpenAI-compatible completion body: every field we use is checked, and anything
malformed (wrong type, negative or absurd usage, a logprob above 0) is an UpstreamProtocolError.

Absent optional fields are not errors: no ``usage`` means it is estimated, no ``logprobs`` means no
token statistics, a null ``content`` is an empty text, a null ``finish_reason`` reads as "stop".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from thinktwice.errors import UpstreamProtocolError
from thinktwice.types import TokenStat

__all__ = ["Choice", "ReportedUsage", "decode_json", "parse_choices", "parse_usage", "token_stat"]

_MAX_COUNT = 1 << 53  # larger token counts are not counts (and do not fit a SQLite integer sum)
_MAX_LOGPROB = 1e-3  # float32 log-softmax may round a certain token slightly above 0; more is invalid


@dataclass(frozen=True, slots=True)
class Choice:
    """One parsed choice."""

    text: str
    finish_reason: str
    tokens: tuple[TokenStat, ...] | None


@dataclass(frozen=True, slots=True)
class ReportedUsage:
    """Usage as the server reported it; ``prompt_tokens`` None when it left that out."""

    prompt_tokens: int | None
    cached_prompt_tokens: int
    completion_tokens: int


def _bad(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"malformed response: {what}")


def decode_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or UpstreamProtocolError."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _bad(f"the body is not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise _bad(f"the body is a JSON {type(data).__name__}, not an object")
    return data


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name} is {type(value).__name__}, not an integer")
    if isinstance(value, float) and not value.is_integer():
        raise _bad(f"{name} is {value!r}, not an integer")
    if not 0 <= value < _MAX_COUNT:
        raise _bad(f"{name} is {value!r}, outside [0, 2**53)")
    return int(value)


def parse_usage(u: Any) -> ReportedUsage | None:
    """The ``usage`` object; None when absent or without ``completion_tokens`` (then estimated)."""
    if u is None:
        return None
    if not isinstance(u, dict):
        raise _bad(f"usage is {type(u).__name__}, not an object")
    if u.get("completion_tokens") is None:
        return None
    completion = _count(u["completion_tokens"], "usage.completion_tokens")
    prompt = None if u.get("prompt_tokens") is None else _count(u["prompt_tokens"], "usage.prompt_tokens")
    details = u.get("prompt_tokens_details")
    cached = 0
    if details is not None:
        if not isinstance(details, dict):
            raise _bad("usage.prompt_tokens_details is not an object")
        if details.get("cached_tokens") is not None:
            cached = _count(details["cached_tokens"], "usage.prompt_tokens_details.cached_tokens")
    if prompt is not None and cached > prompt:
        raise _bad(f"usage reports {cached} cached of {prompt} prompt tokens")
    return ReportedUsage(prompt, cached, completion)


def _text(value: Any, name: str) -> str:
    """A text field: a string, null (empty) or a list of text parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise _bad(f"{name} has a part without text")
            parts.append(text)
        return "".join(parts)
    raise _bad(f"{name} is {type(value).__name__}, not a string")


def _logprob(value: Any, name: str, nullable: bool = True) -> float:
    if value is None and nullable:
        return math.nan  # some servers send null where they have no value (a prompt's first token)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name} is {type(value).__name__}, not a number")
    v = float(value)
    if math.isnan(v) or v > _MAX_LOGPROB:
        raise _bad(f"{name} is {v!r}, not a log-probability")
    return v


def token_stat(token: str, logprob: float, top: tuple[tuple[str, float], ...], approx: bool) -> TokenStat:
    """A TokenStat; with ``approx`` and a top-k, entropy and self-certainty from the renormalised top-k."""
    if not (approx and top):
        return TokenStat(token, logprob, top)
    finite = [v for _, v in top if v > -math.inf]
    if not finite:
        return TokenStat(token, logprob, top)
    m = max(finite)
    z = m + math.log(sum(math.exp(v - m) for v in finite))
    logs = [v - z for v in finite]
    entropy = -sum(math.exp(x) * x for x in logs)
    self_certainty = -math.log(len(logs)) - sum(logs) / len(logs)
    return TokenStat(token, logprob, top, entropy=entropy, self_certainty=self_certainty, approx=True)


def _sorted_top(pairs: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(pairs, key=lambda tv: -tv[1]))


def _chat_tokens(lp: dict[str, Any], approx: bool) -> tuple[TokenStat, ...] | None:
    content = lp.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise _bad("logprobs.content is not a list")
    out = []
    for e in content:
        if not isinstance(e, dict) or not isinstance(e.get("token"), str):
            raise _bad("a logprobs.content entry has no string token")
        alts = e.get("top_logprobs") or []
        if not isinstance(alts, list):
            raise _bad("top_logprobs is not a list")
        top = []
        for t in alts:
            if not isinstance(t, dict) or not isinstance(t.get("token"), str):
                raise _bad("a top_logprobs entry has no string token")
            top.append((t["token"], _logprob(t.get("logprob"), "top_logprobs.logprob", nullable=False)))
        out.append(token_stat(e["token"], _logprob(e.get("logprob"), "logprobs.content.logprob"),
                              _sorted_top(top), approx))
    return tuple(out)


def _completion_tokens(lp: dict[str, Any], approx: bool) -> tuple[TokenStat, ...] | None:
    toks, lps, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
    if toks is None or lps is None:
        return None
    if not isinstance(toks, list) or not isinstance(lps, list) or len(toks) != len(lps):
        raise _bad("logprobs.tokens and logprobs.token_logprobs are not lists of one length")
    if tops is not None and not isinstance(tops, list):
        raise _bad("logprobs.top_logprobs is not a list")
    out = []
    for j, (tok, val) in enumerate(zip(toks, lps)):
        if not isinstance(tok, str):
            raise _bad("logprobs.tokens holds a non-string")
        alts = tops[j] if tops is not None and j < len(tops) and tops[j] else {}
        if not isinstance(alts, dict) or not all(isinstance(t, str) for t in alts):
            raise _bad("a logprobs.top_logprobs entry is not an object of token: logprob")
        top = _sorted_top([(t, _logprob(v, "top_logprobs value", nullable=False)) for t, v in alts.items()])
        out.append(token_stat(tok, _logprob(val, "token_logprobs value"), top, approx))
    return tuple(out)


def _order(choices: list[Any]) -> list[Any]:
    """Choices by ``index`` when every one has a distinct integer index, else as sent."""
    idx = [c.get("index") if isinstance(c, dict) else None for c in choices]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in idx) and len(set(idx)) == len(idx):
        return [c for _, c in sorted(zip(idx, choices), key=lambda p: p[0])]
    return choices


def parse_choices(data: dict[str, Any], *, chat: bool, n: int, logprobs: bool, approx: bool) -> list[Choice]:
    """The first ``n`` choices of ``data`` (there may be fewer), each checked."""
    raw = data.get("choices")
    if not isinstance(raw, list) or not raw:
        raise _bad("no choices")
    out = []
    for ch in _order(raw)[:n]:
        if not isinstance(ch, dict):
            raise _bad(f"a choice is {type(ch).__name__}, not an object")
        if chat:
            msg = ch.get("message")
            if not isinstance(msg, dict):
                raise _bad(f"a choice's message is {type(msg).__name__}, not an object")
            text = _text(msg.get("content"), "message.content")
        else:
            text = _text(ch.get("text"), "text")
        finish = ch.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise _bad(f"finish_reason is {type(finish).__name__}, not a string")
        tokens = None
        lp = ch.get("logprobs")
        if logprobs and lp is not None:
            if not isinstance(lp, dict):
                raise _bad("logprobs is not an object")
            tokens = _chat_tokens(lp, approx) if chat else _completion_tokens(lp, approx)
        out.append(Choice(text, finish or "stop", tokens))
    return out
