"""Pydantic models for the untrusted request boundary, and the response builders.

Requests allow extra fields (OpenAI adds new ones often): passthrough forwards them untouched and
strategies forward them to every sampling call (:meth:`_Common.forwarded`); only the fields the
proxy reads are typed. A shape error becomes a 422, a bad value a 400. Passthrough reads even
less (:class:`PassthroughRequest`), so any body the upstream accepts gets through.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thinktwice.serve.errors import ProxyError
from thinktwice.types import Message, Prompt

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "PassthroughRequest",
    "StreamOptions",
    "ThinktwiceOptions",
    "new_id",
    "parse_passthrough",
    "parse_request",
    "parse_thinktwice",
]

# Fields that only make sense with tool calling (refused, or routed to passthrough, with ``tools``).
TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")
TokenIds = list[int]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


_M = TypeVar("_M", bound=BaseModel)


class ChatMessage(_Open):
    """One message; ``content`` may be text, a list of content parts, or null (tool calls)."""

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")
        return ""

    def non_text_parts(self) -> list[str]:
        """The types of content parts that are not text (images, audio, files)."""
        if not isinstance(self.content, list):
            return []
        return [str(p.get("type")) for p in self.content if p.get("type", "text") != "text"]

    def to_message(self) -> Message:
        if isinstance(self.content, list):
            return Message.from_parts(self.role, self.content)
        return Message(self.role, self.text())


class StreamOptions(_Open):
    include_usage: bool = False


class ThinktwiceOptions(_Open):
    """The ``thinktwice`` body field: a strategy name, a token budget, and strategy options (extra keys)."""

    strategy: str | None = None
    budget_tokens: int | None = Field(default=None, ge=1)
    fallback: Literal["passthrough", "error"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def strategy_options(self) -> dict[str, Any]:
        """Options for the strategy: ``options`` plus any extra keys given inline."""
        return {**(self.model_extra or {}), **self.options}


class _Common(_Open):
    model: str | None = None
    n: int = Field(default=1, ge=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, lt=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    thinktwice: ThinktwiceOptions | str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        return [v] if isinstance(v, str) else v

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def limit_field(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def forwarded(self) -> dict[str, Any]:
        """The fields the proxy does not read itself (``response_format``, penalties, ``logit_bias``,
        ``user`` ...): sent verbatim with every sampling call of a strategy."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in TOOL_FIELDS}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def wants_logprobs(self) -> int | None:
        """How many alternatives per token the client asked for, or None when it asked no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def uses_tools(self) -> bool:
        extra = self.model_extra or {}
        return bool(self.tools) or bool(extra.get("functions"))

    def prompt(self) -> Prompt:
        return Prompt(messages=tuple(m.to_message() for m in self.messages))

    def question(self) -> str:
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].text()


class CompletionRequest(_Common):
    """POST /v1/completions (one prompt string, a list of them, or token ids)."""

    prompt: str | list[str] | TokenIds | list[TokenIds]
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    uses_tools: ClassVar[bool] = False

    @property
    def wants_logprobs(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: its text, or its token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(t, int) for t in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    @property
    def has_token_ids(self) -> bool:
        return any(not isinstance(p, str) for p in self.prompts())


def parse_request(kind: Literal["chat", "completion"], body: Any) -> ChatRequest | CompletionRequest:
    """Validate a decoded JSON body; shape errors become a 422 naming the first bad field."""
    cls: type[ChatRequest | CompletionRequest] = ChatRequest if kind == "chat" else CompletionRequest
    return _validate(cls, body)


class PassthroughRequest(_Open):
    """What the proxy reads of a body it forwards: routing, caps and streaming; nothing else is checked."""

    model: str | None = None
    n: int = Field(default=1, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    thinktwice: ThinktwiceOptions | str | None = None

    limit = _Common.limit
    limit_field = _Common.limit_field
    include_usage = _Common.include_usage

    def prompt_count(self) -> int:
        """How many prompts a completions body holds (a list of strings or of token-id lists)."""
        p = (self.model_extra or {}).get("prompt")
        if isinstance(p, list) and p and not all(isinstance(t, int) for t in p):
            return len(p)
        return 1


def parse_passthrough(body: Any) -> PassthroughRequest:
    """Validate the few fields passthrough reads (422 naming the first bad one)."""
    return _validate(PassthroughRequest, body)


def parse_thinktwice(value: Any) -> ThinktwiceOptions | str | None:
    """The ``thinktwice`` body field alone (read before the route, hence before the full parse)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ProxyError(422, "thinktwice: must be a strategy name or an object", param="thinktwice")
    try:
        return ThinktwiceOptions.model_validate(value)
    except ValidationError as e:
        raise _shape_error(e, "thinktwice") from None


def _shape_error(e: ValidationError, prefix: str | None = None) -> ProxyError:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in ([prefix] if prefix else []) + list(first["loc"]))
    return ProxyError(422, f"{loc}: {first['msg']}", param=loc or None)


def _validate(cls: type[_M], body: Any) -> _M:
    if not isinstance(body, dict):
        raise ProxyError(400, "The request body must be a JSON object.")
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        raise _shape_error(e) from None


def new_id(kind: Literal["chat", "completion"]) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-tt{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
