"""Core value types shared by every layer: prompts, token statistics, samples, usage, budgets, decisions.

All records are frozen dataclasses; they serialise to plain JSON through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from thinktwice.errors import ConfigError

__all__ = [
    "Message",
    "Prompt",
    "TokenStat",
    "Usage",
    "Sample",
    "SamplingParams",
    "Capabilities",
    "Budget",
    "Candidate",
    "TraceStep",
    "Decision",
    "Problem",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    ``parts`` are OpenAI content parts (``{"type": "image_url", ...}``) that HTTP backends send
    instead of ``content``; ``content`` then holds the text of the text parts.
    """

    role: str
    content: str
    parts: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_parts(cls, role: str, parts: Sequence[Mapping[str, Any]]) -> Message:
        """A message whose content is a list of OpenAI content parts."""
        text = "".join(str(p.get("text", "")) for p in parts if p.get("type", "text") == "text")
        return cls(role, text, tuple(dict(p) for p in parts))


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a backend is asked to continue.

    ``messages`` is a chat conversation. ``assistant_prefix`` is text the assistant turn already
    starts with (the model continues it: used by iterative deepening and step-level search).
    ``raw`` is a plain completion prompt that bypasses the chat template; when it is set,
    ``messages`` is ignored by backends.
    """

    messages: tuple[Message, ...] = ()
    assistant_prefix: str = ""
    raw: str | None = None

    @classmethod
    def user(cls, content: str, system: str | None = None) -> Prompt:
        msgs = ((Message("system", system),) if system else ()) + (Message("user", content),)
        return cls(messages=msgs)

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, Any] | Message]) -> Prompt:
        out = []
        for m in messages:
            if isinstance(m, Message):
                out.append(m)
            elif isinstance(m.get("content"), list):
                parts = [p for p in m["content"] if isinstance(p, Mapping)]
                out.append(Message.from_parts(str(m.get("role", "user")), parts))
            else:
                content = m.get("content")
                if not isinstance(content, str):
                    content = "" if content is None else str(content)
                out.append(Message(str(m.get("role", "user")), content))
        return cls(messages=tuple(out))

    def with_prefix(self, prefix: str) -> Prompt:
        """The same prompt with the assistant turn starting with ``prefix``."""
        return replace(self, assistant_prefix=prefix)

    def extend(self, *messages: Message) -> Prompt:
        """A copy with ``messages`` appended (multi-turn refinement)."""
        return replace(self, messages=self.messages + tuple(messages), assistant_prefix="")

    def text(self) -> str:
        """A plain-text rendering (for token estimates, logs and keys; not a chat template)."""
        if self.raw is not None:
            return self.raw + self.assistant_prefix
        body = "\n".join(f"{m.role}: {m.content}" for m in self.messages)
        return body + ("\nassistant: " + self.assistant_prefix if self.assistant_prefix else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": [
                {"role": m.role, "content": m.content, **({"parts": list(m.parts)} if m.parts else {})}
                for m in self.messages
            ],
            "assistant_prefix": self.assistant_prefix,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prompt:
        p = cls.from_messages(
            [{**m, "content": m["parts"]} if m.get("parts") else m for m in d.get("messages", ())]
        )
        return replace(p, assistant_prefix=d.get("assistant_prefix", ""), raw=d.get("raw"))


@dataclass(frozen=True, slots=True)
class TokenStat:
    """Statistics of one generated token.

    ``logprob`` is the natural-log probability of the chosen token. ``top`` holds the top-k
    alternatives as (token, logprob) pairs, most likely first. ``entropy`` (nats) and
    ``self_certainty`` (KL(U || p), nats) are set only when the backend saw the full
    next-token distribution; ``approx`` is True when fields were derived from a truncated top-k.
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    entropy: float | None = None
    self_certainty: float | None = None
    approx: bool = False

    def to_list(self) -> list[Any]:
        return [self.token, self.logprob, [list(t) for t in self.top], self.entropy, self.self_certainty,
                self.approx]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> TokenStat:
        return cls(v[0], float(v[1]), tuple((str(a), float(b)) for a, b in v[2]), v[3], v[4], bool(v[5]))


@dataclass(frozen=True, slots=True)
class Usage:
    """Compute spent by model calls. Adds up with ``+``.

    ``prompt_tokens`` counts every prompt token sent; ``cached_prompt_tokens`` is the part of
    them that was served from a cache or shared with a sibling sequence (not recomputed).
    ``estimated`` is True when some count was estimated rather than reported by the server.
    """

    calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.seconds + other.seconds,
            self.estimated or other.estimated,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @staticmethod
    def total(items: Sequence[Usage]) -> Usage:
        out = Usage()
        for u in items:
            out = out + u
        return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated response.

    ``usage`` is this sample's share of its call: the sample that opened a call carries
    ``calls=1`` and the call's prompt tokens; siblings from the same call (native ``n``) carry
    ``calls=0`` and only their completion tokens, so summing samples gives the call's cost.
    ``tokens`` is None when the backend cannot report per-token statistics.
    """

    text: str
    tokens: tuple[TokenStat, ...] | None = None
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    seed: int | None = None
    endpoint: str | None = None

    def to_dict(self, with_tokens: bool = True) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": [t.to_list() for t in self.tokens] if (with_tokens and self.tokens is not None) else None,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict(),
            "model": self.model,
            "seed": self.seed,
            "endpoint": self.endpoint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        toks = d.get("tokens")
        return cls(
            text=d["text"],
            tokens=tuple(TokenStat.from_list(t) for t in toks) if toks is not None else None,
            finish_reason=d.get("finish_reason", "stop"),
            usage=Usage.from_dict(d.get("usage", {})),
            model=d.get("model", ""),
            seed=d.get("seed"),
            endpoint=d.get("endpoint"),
        )


# Request-body fields a backend derives from SamplingParams itself (never from ``extra``).
_OWN_FIELDS = frozenset({
    "model", "messages", "prompt", "n", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "min_p", "stop", "seed", "logprobs", "top_logprobs",
})


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding settings for one backend call.

    ``top_logprobs`` asks for that many alternatives per token (0 = chosen token only);
    ``logprobs`` asks for per-token statistics at all. Backends that see the full distribution
    also fill entropy and self-certainty whenever ``logprobs`` is on. ``extra`` holds further
    request fields (``response_format``, penalties, ``logit_bias``, ``user`` ...) that HTTP
    backends copy verbatim into the request body; the fields above cannot be set through it.
    """

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = True
    top_logprobs: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.extra:
            taken = sorted(k for k in self.extra if k in _OWN_FIELDS)
            if taken:
                raise ConfigError(f"SamplingParams.extra cannot set {', '.join(taken)}; use the fields")
            object.__setattr__(self, "extra", dict(self.extra))
        if self.max_tokens < 0:
            raise ConfigError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.top_logprobs < 0:
            raise ConfigError("top_k and top_logprobs must be >= 0")
        if not 0 <= self.min_p < 1:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")
        if isinstance(self.stop, str):  # a common slip: stop="\n"
            object.__setattr__(self, "stop", (self.stop,))

    def replace(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        if not self.extra:  # keeps the keys of calls logged before ``extra`` existed
            del d["extra"]
        return d


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; signals and strategies check these before a run starts.

    ``logprobs``: chosen-token logprobs. ``top_logprobs``: the widest top-k it returns (0 = none).
    ``full_vocab``: exact entropy / self-certainty from the whole distribution. ``native_n``: one
    call returns n samples. ``prefix_sharing``: the prompt is evaluated once for n samples or
    reused across calls. ``continuation``: honours ``Prompt.assistant_prefix``. ``monitor``:
    can stop a sequence mid-generation through a per-token callback. ``hidden_states``: exposes the
    latent layer (teacher-forced hidden states and logit lens; the ``hf`` backend).
    """

    logprobs: bool = False
    top_logprobs: int = 0
    full_vocab: bool = False
    native_n: bool = False
    prefix_sharing: bool = False
    continuation: bool = False
    monitor: bool = False
    max_n: int = 1024
    hidden_states: bool = False

    def has(self, need: str) -> bool:
        """True when the named capability is present (names as in ``Signal.requires``)."""
        if need == "top_logprobs":
            return self.top_logprobs > 0
        value = getattr(self, need, None)
        if value is None:
            raise ConfigError(f"unknown capability {need!r}")
        return bool(value)


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on what one decision may spend; any subset may be set (None = unlimited).

    ``max_tokens`` limits generated tokens; ``max_prompt_tokens`` prompt tokens sent;
    ``max_calls`` model calls; ``max_samples`` generated sequences.
    """

    max_calls: int | None = None
    max_tokens: int | None = None
    max_prompt_tokens: int | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v < 0:
                raise ConfigError(f"Budget.{f.name} must be >= 0, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A sample with its extracted answer and the scores signals gave it."""

    sample: Sample
    answer: str | None
    scores: Mapping[str, float] = field(default_factory=dict)
    stage: str = "sample"

    def with_score(self, name: str, value: float) -> Candidate:
        return replace(self, scores={**self.scores, name: value})


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One readable step of a strategy's reasoning about its candidates."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.detail)}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy decided for one problem, and everything it spent to decide it.

    ``usage`` is the sum over every model call caused (signals included); ``stages`` splits it
    by stage name ("sample", "p-true", "critique", ...). ``chosen`` indexes ``candidates``
    (None when the answer was written fresh, e.g. by aggregation). ``stopped_because`` says why
    sampling ended: "done", "converged", "budget", "confident", "max-samples", "error".
    """

    answer: str | None
    confidence: float | None
    candidates: tuple[Candidate, ...]
    chosen: int | None
    usage: Usage
    stages: Mapping[str, Usage] = field(default_factory=dict)
    trace: tuple[TraceStep, ...] = ()
    stopped_because: str = "done"
    strategy: str = ""
    votes: Mapping[str, float] = field(default_factory=dict)
    text: str | None = None

    @property
    def response(self) -> str:
        """The text to show a user: the chosen candidate's text or the freshly written answer."""
        if self.text is not None:
            return self.text
        if self.chosen is not None and 0 <= self.chosen < len(self.candidates):
            return self.candidates[self.chosen].sample.text
        return self.answer or ""

    def to_dict(self, with_tokens: bool = False) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "confidence": self.confidence,
            "chosen": self.chosen,
            "usage": self.usage.to_dict(),
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
            "trace": [t.to_dict() for t in self.trace],
            "stopped_because": self.stopped_because,
            "strategy": self.strategy,
            "votes": dict(self.votes),
            "text": self.text,
            "candidates": [
                {"answer": c.answer, "scores": dict(c.scores), "stage": c.stage,
                 "sample": c.sample.to_dict(with_tokens=with_tokens)}
                for c in self.candidates
            ],
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """One task item: its id, the question text, the gold answer and task-specific extras."""

    id: str
    question: str
    gold: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
