"""Retry policy for HTTP backends: exponential backoff with full jitter, honouring ``Retry-After``.

Full jitter (sleep a uniform draw from ``[0, min(cap, base * 2**attempt)]``) is the variant the AWS
architecture blog ("Exponential Backoff And Jitter", 2015) found to spread retry storms best. The
draw comes from a caller-owned ``random.Random`` so a seed fixes the delays.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from thinktwice.errors import ConfigError

__all__ = ["RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a failed request.

    ``max_retries`` retries follow the first attempt. The wait before retry ``k`` (0-based) is
    ``max(retry_after, U(0, min(backoff_max_s, backoff_base_s * 2**k)))``. A server asking for a
    ``Retry-After`` longer than ``retry_after_max_s`` is not waited for: the error is raised with
    its ``retry_after`` so the caller can decide.
    """

    max_retries: int = 5
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ConfigError(
                f"need 0 <= backoff_base_s <= backoff_max_s, got {self.backoff_base_s} and {self.backoff_max_s}")
        if self.retry_after_max_s < 0:
            raise ConfigError(f"retry_after_max_s must be >= 0, got {self.retry_after_max_s}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The jittered backoff before retry number ``attempt`` (0-based)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2.0 ** min(attempt, 62)))
        return rng.uniform(0.0, cap)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before retry ``attempt``: the jittered backoff, or ``retry_after`` if longer."""
        b = self.backoff(attempt, rng)
        return b if retry_after is None else max(b, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return None if math.isnan(seconds) else max(0.0, seconds)
