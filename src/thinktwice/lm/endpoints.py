"""A pool of interchangeable server URLs: least-in-flight choice, health cool-downs, in-flight limits.

An endpoint that fails to connect ``failure_threshold`` times in a row leaves the rotation for a
cool-down (``cooldown_s``, doubling with each further failure, capped at ``cooldown_max_s``). When
the cool-down ends a single probe request is let through: success restores the endpoint, failure
sends it back for a longer cool-down. Only connection failures count: any HTTP answer, even a 500,
shows the server is reachable. An endpoint refused at first contact leaves the rotation at once.

Each endpoint has an in-flight limit (:class:`thinktwice.lm.concurrency.AimdLimit`, adaptive by
default): :meth:`EndpointPool.acquire` waits, in arrival order, until an endpoint has room, and
:meth:`EndpointPool.release` frees the slot. Optionally (``rps``) each endpoint also has a
token-bucket rate limit: :meth:`EndpointPool.reserve` books the next request slot and says how long
to wait for it. The backend may check a cooled-down endpoint with a cheap health request
(``needs_probe``, ``record_probe``) before it rejoins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from thinktwice.errors import ConfigError
from thinktwice.lm.concurrency import AimdConfig, AimdLimit, Ticket

__all__ = ["Endpoint", "EndpointPool"]

logger = logging.getLogger(__name__)

_UNBOUNDED = 1 << 20  # no per-endpoint ceiling: the backend's own concurrency limit binds


@dataclass(eq=False)
class Endpoint:
    """One base URL and its live state."""

    url: str
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    ever_ok: bool = False
    probing: bool = False
    times_down: int = 0
    tokens: float = 0.0
    refilled: float | None = None
    throttled: int = 0
    probes: int = 0
    limiter: AimdLimit = field(default_factory=lambda: AimdLimit(_UNBOUNDED, adaptive=False), repr=False)
    n_cap: int | None = None  # most choices one request returned, once it returned fewer than asked

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.limiter.limit

    def to_dict(self, now: float) -> dict[str, object]:
        return {"requests": self.requests, "failures": self.failures, "in_flight": self.in_flight,
                "down": self.down_until > now, "times_down": self.times_down, "throttled": self.throttled,
                "probes": self.probes, "n_cap": self.n_cap, **self.limiter.to_dict()}


class EndpointPool:
    """Chooses which endpoint serves the next request; ``record_*`` report how it went.

    ``max_concurrency`` caps the requests in flight per endpoint (None: no cap here); with
    ``adaptive`` each endpoint's limit moves below that cap as :class:`AimdLimit` decides.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 1.0,
        cooldown_max_s: float = 30.0,
        max_concurrency: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rps: float | None = None,
        burst: float | None = None,
        adaptive: bool = False,
        aimd: AimdConfig | None = None,
    ) -> None:
        if not urls:
            raise ConfigError("at least one base URL is needed")
        if failure_threshold < 1 or cooldown_s < 0 or cooldown_max_s < cooldown_s:
            raise ConfigError("need failure_threshold >= 1 and 0 <= cooldown_s <= cooldown_max_s")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"per-endpoint max_concurrency must be >= 1, got {max_concurrency}")
        if rps is not None and rps <= 0:
            raise ConfigError(f"per-endpoint rps must be > 0, got {rps}")
        if burst is not None and burst < 1:
            raise ConfigError(f"per-endpoint burst must be >= 1, got {burst}")
        self.rps = rps
        self.burst = float(burst if burst is not None else max(1.0, rps or 1.0))
        ceiling = max_concurrency or _UNBOUNDED
        self.endpoints = [Endpoint(u, tokens=self.burst, limiter=AimdLimit(ceiling, aimd, adaptive=adaptive))
                          for u in urls]
        self.failure_threshold, self.cooldown_s, self.cooldown_max_s = failure_threshold, cooldown_s, cooldown_max_s
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._rr = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters woken that have not yet tried to pick

    def reset_waiters(self) -> None:
        """Forget queued waiters (futures belong to one event loop; a new loop starts empty)."""
        self._waiters, self._woken = deque(), 0

    def _available(self, ep: Endpoint, now: float) -> bool:
        if ep.consecutive_failures < self.failure_threshold:
            return True
        return now >= ep.down_until and not ep.probing  # half-open: one probe at a time

    def pick(self) -> Endpoint | None:
        """The available endpoint with room and the fewest requests in flight (ties: round-robin), or None."""
        eps = self.endpoints
        if len(eps) == 1:
            ep = eps[0]
            chosen: Endpoint | None = ep if ep.has_room and self._available(ep, self._clock()) else None
        else:
            now, chosen, k = self._clock(), None, len(eps)
            for j in range(k):
                ep = eps[(self._rr + j) % k]
                if not ep.has_room or not self._available(ep, now):
                    continue
                if chosen is None or self._load(ep, now) < self._load(chosen, now):
                    chosen = ep
            self._rr = (self._rr + 1) % k
        if chosen is not None and chosen.consecutive_failures >= self.failure_threshold:
            chosen.probing = True
        return chosen

    async def acquire(self) -> tuple[Endpoint, Ticket]:
        """Wait (first come, first served) for an endpoint with room; book a request slot on it.

        Every acquire must be paired with :meth:`release`, whatever happens to the request.
        """
        if not self._waiters and not self._woken:
            ep = self.pick()
            if ep is not None:
                return ep, self._book(ep)
        loop = asyncio.get_running_loop()
        front = False
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            if front:
                self._waiters.appendleft(fut)  # woken but beaten to the slot: keep the place in line
            else:
                self._waiters.append(fut)
            self._wake()  # room may be free already (a woken waiter ahead has not taken its slot yet)
            try:
                # a cool-down may end before any slot is freed; the cap guards against a missed wake-up
                await asyncio.wait_for(fut, timeout=min(self._next_change_s() or 5.0, 5.0))
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                if self._forget(fut):
                    self._wake()  # the slot this waiter was woken for goes to the next one
                raise
            self._forget(fut)
            ep = self.pick()
            if ep is not None:
                ticket = self._book(ep)
                self._wake()  # hand on any room left to the next in line
                return ep, ticket
            front = True

    def _forget(self, fut: asyncio.Future[None]) -> bool:
        """Take ``fut`` out of the line; True if it had been woken."""
        if fut.done() and not fut.cancelled():
            self._woken -= 1
            return True
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
        return False

    def _book(self, ep: Endpoint) -> Ticket:
        ep.in_flight += 1
        return ep.limiter.on_send(ep.in_flight)

    def release(self, ep: Endpoint, ticket: Ticket) -> None:
        """The request of ``ticket`` is over (answered, failed or cancelled): free its slot."""
        del ticket  # the outcome was reported through on_success / on_overload
        ep.in_flight -= 1
        self._wake()

    def on_success(self, ep: Endpoint, ticket: Ticket, seconds: float, completion_tokens: int) -> None:
        """A request on ``ep`` was answered in ``seconds`` with ``completion_tokens`` generated."""
        before = ep.limiter.limit
        ep.limiter.on_success(ticket, seconds, completion_tokens)
        if ep.limiter.limit != before:
            logger.info("endpoint %s: in-flight limit %d -> %d", ep.url, before, ep.limiter.limit)

    def on_overload(self, ep: Endpoint, ticket: Ticket, why: str) -> None:
        """``ep`` refused a request for load (429, 503) or did not answer it in time."""
        before = ep.limiter.limit
        ep.limiter.on_overload(ticket)
        if ep.limiter.limit != before:
            logger.info("endpoint %s: %s; in-flight limit %d -> %d", ep.url, why, before, ep.limiter.limit)

    def _wake(self) -> None:
        """Wake as many queued waiters as there are free slots not yet promised to a woken one."""
        now = self._clock()
        free = sum(max(0, ep.limiter.limit - ep.in_flight) for ep in self.endpoints if self._available(ep, now))
        free -= self._woken
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            fut.set_result(None)
            self._woken += 1
            free -= 1

    def _next_change_s(self) -> float | None:
        """Seconds until a cooled-down endpoint may be tried again (None if none is down)."""
        now = self._clock()
        waits = [ep.down_until - now for ep in self.endpoints if not self._available(ep, now)]
        return max(min(waits), 0.001) if waits else None

    def _load(self, ep: Endpoint, now: float) -> tuple[float, int]:
        """(seconds until its next rate-limit slot, requests in flight): lower is better."""
        return (self._token_wait(ep, now), ep.in_flight) if self.rps else (0.0, ep.in_flight)

    def _refill(self, ep: Endpoint, now: float) -> None:
        if ep.refilled is not None and self.rps:
            ep.tokens = min(self.burst, ep.tokens + (now - ep.refilled) * self.rps)
        ep.refilled = now

    def _token_wait(self, ep: Endpoint, now: float) -> float:
        self._refill(ep, now)
        return 0.0 if ep.tokens >= 1 or not self.rps else (1 - ep.tokens) / self.rps

    def reserve(self, ep: Endpoint) -> float:
        """Book ``ep``'s next request slot under its rate limit; returns the seconds to wait before
        sending (0 without ``rps`` or while the bucket has a token)."""
        if not self.rps:
            return 0.0
        wait = self._token_wait(ep, self._clock())
        ep.tokens -= 1.0  # may go negative: later callers queue behind this booking
        if wait > 0:
            ep.throttled += 1
        return wait

    def needs_probe(self, ep: Endpoint) -> bool:
        """True when ``ep`` was out of rotation and is picked for its first try after the cool-down."""
        return ep.probing

    def record_probe(self, ep: Endpoint, ok: bool) -> None:
        """The result of a health request to ``ep`` (ok: it answered at all)."""
        ep.probes += 1
        if ok:
            self.record_ok(ep)
        else:
            self.record_connect_failure(ep)

    def wait_s(self) -> float:
        """Seconds until some endpoint may be tried again (0 if one is available now)."""
        now = self._clock()
        waits = [0.0 if self._available(ep, now) else max(ep.down_until - now, 0.0) for ep in self.endpoints]
        return min(waits)

    def record_ok(self, ep: Endpoint) -> None:
        """The endpoint answered (any HTTP status)."""
        if ep.consecutive_failures >= self.failure_threshold:
            logger.warning("endpoint %s is back", ep.url)
        ep.consecutive_failures, ep.ever_ok, ep.probing, ep.down_until = 0, True, False, 0.0

    def record_other_failure(self, ep: Endpoint) -> None:
        """The request failed after connecting (timeout, dropped connection): health is unchanged."""
        ep.failures += 1
        ep.probing = False

    def record_connect_failure(self, ep: Endpoint) -> None:
        """The endpoint could not be reached."""
        ep.failures += 1
        ep.probing = False
        ep.consecutive_failures += 1
        if not ep.ever_ok:  # never reached: no reason to expect it to come back soon
            ep.consecutive_failures = max(ep.consecutive_failures, self.failure_threshold)
        extra = ep.consecutive_failures - self.failure_threshold
        if extra >= 0:
            cool = min(self.cooldown_max_s, self.cooldown_s * 2.0 ** min(extra, 30))
            ep.down_until = self._clock() + cool
            ep.times_down += 1
            if ep.ever_ok:
                logger.warning("endpoint %s unreachable %d times in a row; out of rotation for %.1f s",
                               ep.url, ep.consecutive_failures, cool)
            else:
                logger.warning("endpoint %s refused the first contact; out of rotation for %.1f s", ep.url, cool)

    def all_refused(self) -> bool:
        """True when no endpoint has ever answered and every one is out of rotation."""
        now = self._clock()
        return all(not ep.ever_ok and ep.down_until > now for ep in self.endpoints)

    def to_dict(self) -> dict[str, dict[str, object]]:
        now = self._clock()
        return {ep.url: ep.to_dict(now) for ep in self.endpoints}
