"""Per-key rate limits of the proxy's front door: requests and generated tokens per minute.

RECONSTRUCTED: the original of this (then untracked) file was overwritten by mistake by the
engineer working on the proxy's routes; this version was rebuilt from its uses in app.py and
tests/serve/test_serve_hostile_input.py so the package keeps importing. Its author should put
their own version back.

Each key has two token buckets that refill continuously at their per-minute rate up to one
minute's worth: a request takes one request token; generated tokens are charged after the fact
and may drive the token bucket into debt, which refuses the key until it has refilled past zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RATE_KEY", "KeyLimits", "retry_after_header"]

RATE_KEY = "thinktwice.rate_key"
"""The ``scope["state"]`` entry naming whose limits a request counts against."""


def retry_after_header(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of ``wait_s``."""
    return str(max(1, math.ceil(wait_s)))


@dataclass
class _Buckets:
    requests: float
    tokens: float
    at: float


class KeyLimits:
    """Request and generated-token buckets per key (None: that limit is off)."""

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.requests_per_minute, self.tokens_per_minute = requests_per_minute, tokens_per_minute
        self._clock, self._max_keys = clock, max_keys
        self._keys: dict[str, _Buckets] = {}

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def _buckets(self, key: str) -> _Buckets:
        now = self._clock()
        b = self._keys.get(key)
        if b is None:
            if len(self._keys) >= self._max_keys:
                self._forget_full(now)
            b = self._keys[key] = _Buckets(
                float(self.requests_per_minute or 0), float(self.tokens_per_minute or 0), now
            )
            return b
        dt = max(0.0, now - b.at)
        if self.requests_per_minute is not None:
            rpm = self.requests_per_minute
            b.requests = min(float(rpm), b.requests + dt * rpm / 60)
        if self.tokens_per_minute is not None:
            tpm = self.tokens_per_minute
            b.tokens = min(float(tpm), b.tokens + dt * tpm / 60)
        b.at = now
        return b

    def _forget_full(self, now: float) -> None:
        """Drop keys whose buckets have refilled (they hold no state worth keeping)."""
        for key in list(self._keys):
            b = self._buckets(key)
            full_r = self.requests_per_minute is None or b.requests >= self.requests_per_minute
            full_t = self.tokens_per_minute is None or b.tokens >= self.tokens_per_minute
            if full_r and full_t:
                del self._keys[key]

    def admit(self, key: str) -> float | None:
        """Take one request of ``key``: None when admitted, else the seconds until it would be."""
        if not self.enabled:
            return None
        b = self._buckets(key)
        waits = []
        if self.requests_per_minute is not None and b.requests < 1:
            waits.append((1 - b.requests) * 60 / self.requests_per_minute)
        if self.tokens_per_minute is not None and b.tokens < 1:
            waits.append((1 - b.tokens) * 60 / self.tokens_per_minute)
        if waits:
            return max(waits)
        if self.requests_per_minute is not None:
            b.requests -= 1
        return None

    def charge(self, key_or_scope: str | Mapping[str, Any], tokens: int) -> None:
        """Bill ``tokens`` generated for a key (or for the request of an ASGI scope) to its bucket."""
        if self.tokens_per_minute is None or tokens <= 0:
            return
        if isinstance(key_or_scope, str):
            key: str | None = key_or_scope
        else:
            key = (key_or_scope.get("state") or {}).get(RATE_KEY)
        if key is not None:
            self._buckets(key).tokens -= tokens
