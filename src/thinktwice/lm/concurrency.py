"""Adaptive in-flight limits per endpoint: additive increase, multiplicative decrease on queueing.

A server that runs fewer requests at once than it is sent queues the rest: each request's latency
then grows with the number in flight while the work per second does not. :class:`AimdLimit` keeps
one endpoint's limit on requests in flight. It judges one *round* at a time (as many completions of
requests sent under the current limit as the limit allows) against a no-queue baseline, the lower
quartile of recent seconds per generated token. A round is *queued* when its requests waited more
than ``min_wait_s`` each and the server evidently ran fewer than half of them side by side
(latency ratio ``q > 2D / (D + 1)`` at mean depth ``D``: a one-slot server at depth ``D`` shows
``q`` near ``D``, a batching server close to 1). A queued round, a 429, a 503 or a read timeout
halves the limit (once per round, as TCP does once per window); a round that filled the limit
without queueing raises it, doubling until the first decrease (slow start), then by one. After a
decrease the level that queued is probed again only after 1, 2, 4, ... (at most
``max_hold_rounds``) good rounds, so a one-slot server sees one request at a time nearly always.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from thinktwice.errors import ConfigError

__all__ = ["AimdConfig", "AimdLimit", "Ticket"]


@dataclass(frozen=True, slots=True)
class AimdConfig:
    """How an endpoint's in-flight limit adapts.

    ``initial``: the limit before anything is known (1: a one-slot server never sees a queue).
    ``decrease``: factor applied on queueing, 429, 503 or a read timeout. ``min_wait_s``: mean
    queueing delay per request below which latency is not judged (client noise on fast servers).
    ``min_tokens``: calls generating fewer tokens carry no latency evidence (their time is prompt
    work). ``window``: completions in the baseline. ``max_hold_rounds``: cap on the good rounds
    required before a level that queued is tried again.
    """

    initial: int = 1
    decrease: float = 0.5
    min_wait_s: float = 0.05
    min_tokens: int = 8
    window: int = 64
    max_hold_rounds: int = 32

    def __post_init__(self) -> None:
        if self.initial < 1 or not 0 < self.decrease < 1:
            raise ConfigError(f"need initial >= 1 and 0 < decrease < 1, got {self.initial} and {self.decrease}")
        if self.min_wait_s < 0 or self.min_tokens < 1 or self.window < 1 or self.max_hold_rounds < 1:
            raise ConfigError("need min_wait_s >= 0 and min_tokens, window, max_hold_rounds >= 1")


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a request's send looked like: the limit epoch it was sent in and the requests then in
    flight on its endpoint, itself included."""

    epoch: int
    depth: int


class AimdLimit:
    """The in-flight limit of one endpoint; the caller keeps the in-flight count and asks ``limit``.

    ``ceiling`` bounds the limit (the configured per-endpoint or per-backend concurrency). With
    ``adaptive=False`` the limit stays at the ceiling and the observations only count.
    """

    def __init__(self, ceiling: int, config: AimdConfig | None = None, *, adaptive: bool = True) -> None:
        if ceiling < 1:
            raise ConfigError(f"the concurrency ceiling must be >= 1, got {ceiling}")
        self.config = config or AimdConfig()
        self.ceiling, self.adaptive = ceiling, adaptive
        self.limit = min(ceiling, self.config.initial) if adaptive else ceiling
        self.epoch = 0
        self.increases = self.decreases = self.queued_rounds = self.overloads = 0
        self._slow_start = True
        self._failed_level: int | None = None  # the lowest limit that last queued
        self._hold, self._good = 1, 0
        self._per_token: deque[float] = deque(maxlen=self.config.window)
        self._round: list[tuple[float, int, int]] = []  # (seconds, tokens, depth) with latency evidence
        self._round_done = 0
        self._saturated = False

    def on_send(self, in_flight: int) -> Ticket:
        """A request was sent; ``in_flight`` counts it. Returns the ticket to report its outcome with."""
        if in_flight >= self.limit:
            self._saturated = True
        return Ticket(self.epoch, in_flight)

    def on_success(self, ticket: Ticket, seconds: float, completion_tokens: int) -> None:
        """The request of ``ticket`` was answered after ``seconds`` with ``completion_tokens``."""
        evidence = completion_tokens >= self.config.min_tokens and seconds > 0
        if evidence:
            self._per_token.append(seconds / completion_tokens)
        if not self.adaptive or ticket.epoch != self.epoch:
            return  # sent under an older limit: says nothing about this one
        self._round_done += 1
        if evidence:
            self._round.append((seconds, completion_tokens, ticket.depth))
        if self._round_done >= self.limit:
            self._end_round()

    def on_overload(self, ticket: Ticket) -> None:
        """The server refused (429, 503) or did not answer in time: back off once per round."""
        self.overloads += 1
        if self.adaptive and ticket.epoch == self.epoch:
            self._decrease()

    def baseline_s(self) -> float | None:
        """Seconds per generated token without queueing: the lower quartile of the recent window."""
        if not self._per_token:
            return None
        ordered = sorted(self._per_token)
        return ordered[(len(ordered) - 1) // 4]

    def queued(self, rows: list[tuple[float, int, int]]) -> bool:
        """True when ``rows`` of (seconds, tokens, depth) show requests waiting for each other."""
        base = self.baseline_s()
        if not rows or base is None or base <= 0:
            return False
        seconds = sum(r[0] for r in rows)
        work = base * sum(r[1] for r in rows)
        depth = sum(r[2] for r in rows) / len(rows)
        if depth <= 1 or (seconds - work) / len(rows) <= self.config.min_wait_s:
            return False
        return seconds / work > 2 * depth / (depth + 1)

    def to_dict(self) -> dict[str, object]:
        base = self.baseline_s()
        return {"limit": self.limit, "increases": self.increases, "decreases": self.decreases,
                "queued_rounds": self.queued_rounds, "overloads": self.overloads,
                "baseline_s_per_token": None if base is None else round(base, 6)}

    # -- the control law --------------------------------------------------------------------
    def _new_round(self, changed: bool) -> None:
        if changed:  # requests still in flight were sent under the old limit: their outcome is stale
            self.epoch += 1
        self._round, self._round_done, self._saturated = [], 0, False

    def _end_round(self) -> None:
        if self.queued(self._round):
            self.queued_rounds += 1
            self._decrease()
            return
        if self._failed_level is not None and self.limit >= self._failed_level:
            self._failed_level, self._hold = None, 1  # the level that queued is fine now
        if self._saturated and self.limit < self.ceiling:
            self._increase()
        else:
            self._new_round(False)

    def _increase(self) -> None:
        if self._slow_start:
            new = min(self.ceiling, self.limit * 2)
        else:
            if self._failed_level is not None and self.limit + 1 >= self._failed_level:
                self._good += 1
                if self._good < self._hold:
                    self._new_round(False)
                    return
            new = self.limit + 1
        self._good = 0
        self.limit = min(self.ceiling, new)
        self.increases += 1
        self._new_round(True)

    def _decrease(self) -> None:
        old = self.limit
        # rounded up (3 -> 2, not 1) so a two-slot server is not pushed down to one, but always below
        self.limit = max(1, min(old - 1, math.ceil(old * self.config.decrease)))
        self._slow_start = False
        if self._failed_level is not None and old >= self._failed_level:
            self._hold = min(self.config.max_hold_rounds, self._hold * 2)
        self._failed_level = old if self._failed_level is None else min(self._failed_level, old)
        self._good = 0
        self.decreases += 1
        self._new_round(True)
