"""The exception hierarchy. Every error a user can cause is a ThinktwiceError with a one-line message.

```
ThinktwiceError
├── ConfigError              bad or inconsistent settings, raised at construction
│   ├── UnknownNameError     registry miss; lists the valid names and a "did you mean"
│   └── CapabilityError      a signal or strategy needs what the backend cannot give
├── DataError                missing or malformed input data (names file:line)
├── StoreError               the run store is unreadable, foreign, locked or inconsistent
└── BackendError             a model call failed; .backend .model .status .retry_after
    ├── BackendUnavailable   connection refused, timeouts, 5xx after retries
    ├── RateLimited          429 after retries
    ├── AuthenticationError  401/403: the key was rejected
    ├── ContextLengthExceeded
    ├── UpstreamProtocolError  a 200 answer that is not a well-formed completion
    └── ScriptExhausted      the scripted test backend has no reply left for a prompt
```
"""

from __future__ import annotations

__all__ = [
    "ThinktwiceError",
    "ConfigError",
    "UnknownNameError",
    "CapabilityError",
    "DataError",
    "StoreError",
    "BackendError",
    "BackendUnavailable",
    "RateLimited",
    "AuthenticationError",
    "ContextLengthExceeded",
    "UpstreamProtocolError",
    "ScriptExhausted",
]


class ThinktwiceError(Exception):
    """Base of every error thinktwice raises on purpose."""


class ConfigError(ThinktwiceError, ValueError):
    """A setting is invalid or settings contradict each other."""


class UnknownNameError(ConfigError, KeyError):
    """A name was looked up in a registry and not found."""

    def __init__(self, kind: str, name: str, valid: list[str], suggestion: str | None = None) -> None:
        self.kind, self.name, self.valid, self.suggestion = kind, name, valid, suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"Unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(valid)}.")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class CapabilityError(ConfigError):
    """A component needs a backend capability (logprobs, full vocabulary, ...) that is missing."""


class DataError(ThinktwiceError):
    """Input data is missing or malformed; the message names the file and line."""


class StoreError(ThinktwiceError):
    """The run store cannot be used as asked."""


class BackendError(ThinktwiceError):
    """A model call failed after the retries its policy allows."""

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.backend, self.model, self.status, self.retry_after = backend, model, status, retry_after


class BackendUnavailable(BackendError):
    """The server could not be reached or kept failing (connection errors, timeouts, 5xx)."""


class RateLimited(BackendError):
    """The server kept answering 429."""


class AuthenticationError(BackendError):
    """The server rejected the API key (401/403)."""


class ContextLengthExceeded(BackendError):
    """The prompt plus max_tokens does not fit the model's context."""


class UpstreamProtocolError(BackendError):
    """The server answered 200 with a body that is not a well-formed completion (invalid JSON, a
    field of the wrong type, negative usage, ...); raised after the retries the policy allows."""


class ScriptExhausted(BackendError):
    """The scripted backend was asked for more replies than its script holds."""
