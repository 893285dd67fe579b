"""Pydantic models for the untrusted request boundary, and the response builders.

Requests allow extra fields (OpenAI adds new ones often, and passthrough forwards them untouched);
only the fields the proxy reads are typed. A shape error becomes a 422, a bad value a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thinktwice.serve.errors import ProxyError
from thinktwice.types import Message, Prompt

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "StreamOptions",
    "ThinktwiceOptions",
    "new_id",
    "parse_request",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class StreamOptions(_Open):
    include_usage: bool = False


class ThinktwiceOptions(_Open):
    """The ``thinktwice`` body field: a strategy name, a token budget, and strategy options (extra keys)."""

    strategy: str | None = None
    budget_tokens: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def strategy_options(self) -> dict[str, Any]:
        """Options for the strategy: ``options`` plus any extra keys given inline."""
        return {**(self.model_extra or {}), **self.options}


class _Common(_Open):
    model: str | None = None
    n: int = Field(default=1, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
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
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None

    def prompt(self) -> Prompt:
        return Prompt(messages=tuple(Message(m.role, m.text()) for m in self.messages))

    def question(self) -> str:
        users = [m.text() for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].text()


class CompletionRequest(_Common):
    """POST /v1/completions (one prompt string, or a list of them)."""

    prompt: str | list[str]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def parse_request(kind: Literal["chat", "completion"], body: Any) -> ChatRequest | CompletionRequest:
    """Validate a decoded JSON body; shape errors become a 422 naming the first bad field."""
    if not isinstance(body, dict):
        raise ProxyError(400, "The request body must be a JSON object.")
    cls = ChatRequest if kind == "chat" else CompletionRequest
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ProxyError(422, f"{loc}: {first['msg']}", param=loc or None) from None


def new_id(kind: Literal["chat", "completion"]) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-tt{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
