"""Which requests a strategy can serve honestly; the rest are refused before any sampling.

A strategy writes a new answer from samples it draws itself, so it cannot echo a prompt or score
its tokens (loglikelihood: ``echo``, ``max_tokens`` 0), call tools, or honour ``best_of`` (it would
multiply every call). Token-id prompts are decoded through the upstream's ``/detokenize``. A
backend that is not an HTTP upstream (the embedded model) cannot see images or forwarded fields:
those that would change the answer are refused, neutral ones (``user``, zero penalties) are
ignored with a warning header. Each refusal is a 400 naming the field and how to forward instead.
"""

from __future__ import annotations

from typing import Any

from thinktwice.lm.base import Backend
from thinktwice.serve.config import PASSTHROUGH
from thinktwice.serve.errors import ProxyError
from thinktwice.serve.passthrough import Upstream, detokenize
from thinktwice.serve.schemas import ChatRequest, CompletionRequest

__all__ = ["forwards_fields", "ignored_fields", "refusal"]

_NEUTRAL = frozenset({"user", "metadata", "store", "service_tier"})
_HOW = (
    f"Use the '{PASSTHROUGH}' strategy (model '{PASSTHROUGH}/MODEL') or thinktwice.fallback="
    f"'{PASSTHROUGH}' to forward it to the upstream."
)


def forwards_fields(backend: Backend) -> bool:
    """True when ``backend`` copies SamplingParams.extra and content parts into its requests."""
    return backend.name == "openai"


def ignored_fields(req: ChatRequest | CompletionRequest, backend: Backend) -> list[str]:
    """Forwarded fields ``backend`` will not see (only neutral ones get this far)."""
    return [] if forwards_fields(backend) else sorted(req.forwarded())


def _refuse(param: str, why: str) -> ProxyError:
    return ProxyError(400, f"{why} {_HOW}", param=param, code="unsupported_by_strategy")


async def refusal(
    req: ChatRequest | CompletionRequest, strategy: str, backend: Backend, upstream: Upstream | None
) -> ProxyError | None:
    """Why ``strategy`` cannot serve ``req`` on ``backend`` (a 400 naming the field), or None.

    Token-id prompts of ``req`` are replaced by their text when ``upstream`` can decode them.
    """
    s = repr(strategy)
    if req.uses_tools:
        param = "tools" if isinstance(req, ChatRequest) and req.tools else "functions"
        why = f"{param} are forwarded only by '{PASSTHROUGH}'; strategy {s} cannot call tools."
        return _refuse(param, why)
    if isinstance(req, CompletionRequest):
        if req.echo:
            return _refuse(
                "echo",
                f"echo asks for the prompt's own tokens (a loglikelihood request); strategy {s} "
                "writes a new answer.",
            )
        if req.best_of is not None and req.best_of > 1:
            return _refuse(
                "best_of",
                f"best_of={req.best_of} would multiply every sampling call of strategy {s}, which "
                "picks among its samples itself.",
            )
    if req.limit == 0:
        why = f"{req.limit_field}=0 asks for no generated text; strategy {s} generates."
        return _refuse(req.limit_field, why)
    if req.wants_logprobs is not None and not backend.capabilities.logprobs:
        return _refuse("logprobs", f"logprobs were asked; backend {backend.name!r} returns none.")
    if not forwards_fields(backend):
        if isinstance(req, ChatRequest):
            for i, m in enumerate(req.messages):
                kinds = sorted(set(m.non_text_parts()))
                if kinds:
                    return _refuse(
                        f"messages.{i}.content",
                        f"content parts of type {', '.join(kinds)} need an HTTP upstream; backend "
                        f"{backend.name!r} reads text only.",
                    )
        for k, v in req.forwarded().items():
            if k not in _NEUTRAL and not _asks_nothing(k, v):
                why = f"{k} reaches only an HTTP upstream; backend {backend.name!r} would ignore it."
                return _refuse(k, why)
    if isinstance(req, CompletionRequest) and req.has_token_ids:
        ids = [p for p in req.prompts() if not isinstance(p, str)]
        texts = await detokenize(upstream, ids) if upstream is not None else None
        if texts is None:
            why = "Token-id prompts need the upstream's /detokenize, which it does not serve."
            return _refuse("prompt", why)
        it = iter(texts)
        req.prompt = [p if isinstance(p, str) else next(it) for p in req.prompts()]
    return None


def _asks_nothing(key: str, value: Any) -> bool:
    """True for a forwarded value that changes nothing (a zero penalty, an empty bias, plain text)."""
    if key in ("frequency_penalty", "presence_penalty"):
        return value in (0, None)
    if key == "repetition_penalty":
        return value in (1, None)
    if key == "logit_bias":
        return not value
    if key == "response_format":
        return value is None or value == {"type": "text"}
    return value is None
