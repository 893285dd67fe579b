"""Prometheus text exposition (format 0.0.4) of the proxy's counters, written by hand.

One :class:`Metrics` lives on ``app.state``: request counts by endpoint and status, a request
latency histogram, decisions by strategy, upstream calls and tokens (prompt / completion; billed
per upstream call, so work done for a client that went away is counted too), requests in flight,
requests given up by their client, and ``max_tokens`` values clamped to the cap. The event loop
is single-threaded, so plain integers need no locks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from thinktwice.types import Usage

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters and a histogram, rendered by :meth:`render`."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.in_flight = 0
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)
        self.decisions: dict[str, int] = defaultdict(int)
        self.upstream_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.upstream_errors: dict[int, int] = defaultdict(int)
        self.disconnects = 0
        self.clamped = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests[(endpoint, status)] += 1
        counts = self._buckets.get(endpoint)
        if counts is None:
            counts = self._buckets[endpoint] = [0] * (len(LATENCY_BUCKETS) + 1)
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sum[endpoint] += seconds
        self._count[endpoint] += 1

    def upstream(self, usage: Usage) -> None:
        self.upstream_calls += usage.calls
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens

    def upstream_raw(self, calls: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.upstream_calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def render(self) -> str:
        out = [
            "# HELP thinktwice_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE thinktwice_requests_total counter",
        ]
        for (ep, status), v in sorted(self.requests.items()):
            out.append(f'thinktwice_requests_total{{endpoint="{_esc(ep)}",status="{status}"}} {v}')
        out += [
            "# HELP thinktwice_requests_in_flight Requests being answered now.",
            "# TYPE thinktwice_requests_in_flight gauge",
            f"thinktwice_requests_in_flight {self.in_flight}",
            "# HELP thinktwice_request_duration_seconds Time from request to the last response byte.",
            "# TYPE thinktwice_request_duration_seconds histogram",
        ]
        for ep, counts in sorted(self._buckets.items()):
            e = _esc(ep)
            acc = 0
            for le, c in zip(LATENCY_BUCKETS, counts):
                acc += c
                out.append(f'thinktwice_request_duration_seconds_bucket{{endpoint="{e}",le="{le:g}"}} {acc}')
            acc += counts[-1]
            out.append(f'thinktwice_request_duration_seconds_bucket{{endpoint="{e}",le="+Inf"}} {acc}')
            out.append(f'thinktwice_request_duration_seconds_sum{{endpoint="{e}"}} {self._sum[ep]:.6f}')
            out.append(f'thinktwice_request_duration_seconds_count{{endpoint="{e}"}} {self._count[ep]}')
        out += [
            "# HELP thinktwice_decisions_total Decisions made, by strategy.",
            "# TYPE thinktwice_decisions_total counter",
        ]
        for name, v in sorted(self.decisions.items()):
            out.append(f'thinktwice_decisions_total{{strategy="{_esc(name)}"}} {v}')
        out += [
            "# HELP thinktwice_upstream_calls_total Calls made to the upstream model.",
            "# TYPE thinktwice_upstream_calls_total counter",
            f"thinktwice_upstream_calls_total {self.upstream_calls}",
            "# HELP thinktwice_upstream_errors_total Upstream failures, by the status the client got.",
            "# TYPE thinktwice_upstream_errors_total counter",
        ]
        for status, v in sorted(self.upstream_errors.items()):
            out.append(f'thinktwice_upstream_errors_total{{status="{status}"}} {v}')
        out += [
            "# HELP thinktwice_client_disconnects_total Requests whose client left before the answer.",
            "# TYPE thinktwice_client_disconnects_total counter",
            f"thinktwice_client_disconnects_total {self.disconnects}",
            "# HELP thinktwice_max_tokens_clamped_total Requests whose max_tokens was lowered to the cap.",
            "# TYPE thinktwice_max_tokens_clamped_total counter",
            f"thinktwice_max_tokens_clamped_total {self.clamped}",
            "# HELP thinktwice_upstream_tokens_total Tokens the upstream reported, by kind.",
            "# TYPE thinktwice_upstream_tokens_total counter",
            f'thinktwice_upstream_tokens_total{{kind="prompt"}} {self.prompt_tokens}',
            f'thinktwice_upstream_tokens_total{{kind="completion"}} {self.completion_tokens}',
        ]
        return "\n".join(out) + "\n"
