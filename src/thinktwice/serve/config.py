"""ServeConfig: the proxy's settings (upstreams, default strategy, keys, limits), validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thinktwice.errors import ConfigError

__all__ = ["PASSTHROUGH", "ServeConfig", "parse_api_keys"]

PASSTHROUGH = "passthrough"
"""The strategy name that forwards a request to the upstream untouched."""


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one proxy instance.

    ``upstreams`` are OpenAI-compatible base URLs ending in ``/v1``; when empty, the embedded
    default backend answers (and ``passthrough`` becomes a single plain sample). ``strategy`` and
    ``strategy_options`` are the defaults for requests that name no strategy. ``api_keys`` are the
    keys clients must present (none: no authentication). ``upstream_api_key`` is what the proxy
    sends upstream. Limits: ``max_n`` choices per request, ``max_tokens`` per generated sample
    (also the default when a request sets none), ``budget_tokens`` generated tokens and
    ``max_samples`` generated sequences per decision,
    ``max_body_bytes`` per request body, ``timeout_s`` per upstream call (a generation: read timeouts are
    not resent, so this is minutes, as the openai SDK's) and
    ``request_timeout_s`` per request.

    Front door: ``requests_per_minute`` and ``tokens_per_minute`` (generated tokens billed to it) per
    client key (per client address when no keys are set; None: no limit), answered 429 with
    Retry-After; ``header_timeout_s`` to send a complete request head (from connecting, or from the
    first byte of the next request on a kept-alive connection), ``body_timeout_s`` to send the
    whole body, and ``keep_alive_timeout_s`` before an idle kept-alive connection is closed.

    Work one request may cause: ``max_request_samples`` generated sequences over all its prompts and
    choices (default ``max_n * max_samples``) and ``max_request_tokens`` generated tokens (default
    ``max_n * budget_tokens``); above either it is refused with a 400 before any upstream call.
    ``max_tokens_policy`` says what a ``max_tokens`` above ``max_tokens`` gets: ``"clamp"`` (lowered, with
    a ``Warning`` header) or ``"refuse"`` (a 400). ``fallback="passthrough"`` forwards requests a
    strategy cannot serve honestly (echo, logprobs of the prompt, tools) instead of refusing them.
    ``stream_keepalive_s``: seconds of silence before a strategy's stream sends a keep-alive comment.
    """

    upstreams: tuple[str, ...] = ()
    upstream_api_key: str | None = None
    model: str | None = None
    strategy: str = "adaptive-consistency"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()
    max_n: int = 8
    max_tokens: int = 4096
    budget_tokens: int = 65536
    max_samples: int = 64
    max_body_bytes: int = 4 * 1024 * 1024
    timeout_s: float = 600.0
    request_timeout_s: float = 600.0
    max_concurrency: int = 256
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_request_samples: int | None = None
    max_request_tokens: int | None = None
    max_tokens_policy: str = "clamp"
    fallback: str | None = None
    stream_keepalive_s: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.upstreams, str):
            object.__setattr__(self, "upstreams", (self.upstreams,))
        object.__setattr__(self, "upstreams", tuple(u.rstrip("/") for u in self.upstreams))
        object.__setattr__(self, "api_keys", tuple(k for k in self.api_keys if k))
        for name in (
            "max_n",
            "max_tokens",
            "budget_tokens",
            "max_samples",
            "max_body_bytes",
            "max_concurrency",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.max_tokens_policy not in ("clamp", "refuse"):
            raise ConfigError(f"max_tokens_policy must be 'clamp' or 'refuse', got {self.max_tokens_policy!r}")
        if self.fallback not in (None, "passthrough"):
            raise ConfigError(f"fallback must be None or 'passthrough', got {self.fallback!r}")
        for name in ("requests_per_minute", "tokens_per_minute", "max_request_samples", "max_request_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or None (no limit), got {v!r}")
        for name in ("timeout_s", "request_timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_timeout_s",
                     "stream_keepalive_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ConfigError(f"{name} must be a finite number of seconds > 0, got {v!r}")
        for u in self.upstreams:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"upstream {u!r} is not an http(s) URL")
        if not self.strategy:
            raise ConfigError("strategy must be a strategy name")


def parse_api_keys(text: str) -> tuple[str, ...]:
    r"""Client keys from the text of a keys file or ``$THINKTWICE_API_KEYS``: one key per line or
    comma-separated; blank lines and lines starting with ``#`` are skipped.

    >>> parse_api_keys("# clients\nsk-a\n\nsk-b, sk-c\n")
    ('sk-a', 'sk-b', 'sk-c')
    """
    keys: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys += [k.strip() for k in line.split(",") if k.strip()]
    return tuple(keys)
