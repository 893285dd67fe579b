"""AimdLimit, the adaptive in-flight limit per endpoint: slow start, halving on queueing or overload,
held-back probes of a level that queued, stale outcomes ignored, bounds under any event sequence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import ConfigError
from thinktwice.lm.concurrency import AimdConfig, AimdLimit

T = 1.0  # seconds a request of 100 tokens takes alone
TOKENS = 100


def _round(lim: AimdLimit, serial: bool) -> None:
    """One full round at the current limit against a one-slot (serial) or a parallel server:
    ``limit`` requests sent together, the k-th answered after k * T (serial) or T (parallel)."""
    tickets = [lim.on_send(i + 1) for i in range(lim.limit)]
    for k, t in enumerate(tickets, start=1):
        lim.on_success(t, (k if serial else 1) * T, TOKENS)


def test_slow_start_doubles_to_the_ceiling_on_a_parallel_server() -> None:
    lim = AimdLimit(16)
    seen = [lim.limit]
    for _ in range(6):
        _round(lim, serial=False)
        seen.append(lim.limit)
    assert seen == [1, 2, 4, 8, 16, 16, 16]
    assert lim.decreases == 0 and lim.queued_rounds == 0


def test_a_one_slot_server_is_held_at_one_and_probed_ever_more_rarely() -> None:
    lim = AimdLimit(8)
    limits = []
    for _ in range(200):
        _round(lim, serial=True)
        limits.append(lim.limit)
    assert max(limits) == 2  # it never goes past the first level that queued
    probes = [i for i, v in enumerate(limits) if v == 2]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= 32  # held back 1, 2, 4, ... up to max_hold_rounds
    assert limits.count(1) / len(limits) > 0.9  # one request at a time nearly always
    assert lim.queued_rounds == len(probes)


def test_queueing_needs_a_real_wait_and_a_slowdown_like_serial_service() -> None:
    lim = AimdLimit(8)
    for _ in range(4):
        lim.on_success(lim.on_send(1), T, TOKENS)  # the baseline: T per 100 tokens
    assert lim.queued([(1.0 * T, TOKENS, 4)] * 4) is False  # batching server: flat latency at depth 4
    assert lim.queued([(1.5 * T, TOKENS, 4)] * 4) is False  # 1.5x at depth 4 still gains 2.7x throughput
    assert lim.queued([(3.0 * T, TOKENS, 4)] * 4) is True  # serial-like: 3x at depth 4
    assert lim.queued([(2.0 * T, TOKENS, 1)]) is False  # alone: nothing to queue behind
    fast = AimdLimit(8, AimdConfig(min_wait_s=0.05))
    fast.on_success(fast.on_send(1), 0.001, TOKENS)
    assert fast.queued([(0.004, TOKENS, 4)] * 4) is False  # 3 ms of waiting is noise, not a queue


def test_short_calls_carry_no_latency_evidence() -> None:
    lim = AimdLimit(8, AimdConfig(min_tokens=8))
    _round(lim, serial=False)
    _round(lim, serial=False)  # limit 1 -> 2 -> 4 (two good rounds)
    assert lim.limit == 4
    tickets = [lim.on_send(i + 1) for i in range(4)]
    for t in tickets:
        lim.on_success(t, 10 * T, 1)  # one-token calls (e.g. P(True)) that spent their time on the prompt
    assert lim.limit == 8 and lim.decreases == 0


def test_overload_halves_once_per_round_and_stale_outcomes_are_ignored() -> None:
    lim = AimdLimit(16, AimdConfig(initial=8))
    burst = [lim.on_send(i + 1) for i in range(8)]
    for t in burst:  # eight 429s from one burst: one decrease, as TCP backs off once per window
        lim.on_overload(t)
    assert lim.limit == 4 and lim.decreases == 1 and lim.overloads == 8
    for t in burst:  # their late successes were sent under the old limit
        lim.on_success(t, 9 * T, TOKENS)
    assert lim.limit == 4
    lim.on_overload(lim.on_send(1))
    assert lim.limit == 2
    fixed = AimdLimit(5, adaptive=False)
    t = fixed.on_send(5)
    fixed.on_overload(t)
    fixed.on_success(t, 100 * T, TOKENS)
    assert fixed.limit == 5 and fixed.overloads == 1


def test_a_level_that_queued_is_probed_again_and_kept_once_it_works() -> None:
    lim = AimdLimit(8)
    _round(lim, serial=False)  # 1 -> 2
    _round(lim, serial=True)  # 2 queues -> 1
    assert lim.limit == 1
    _round(lim, serial=False)  # the server got faster (say a second slot): probe 2 after one good round
    assert lim.limit == 2
    _round(lim, serial=False)
    assert lim.limit == 3  # 2 worked: the memory of it queueing is dropped, growth is additive
    assert lim.to_dict()["limit"] == 3 and lim.to_dict()["decreases"] == 1


def test_config_is_validated() -> None:
    for bad in ({"initial": 0}, {"decrease": 1.0}, {"decrease": 0.0}, {"min_wait_s": -1.0}, {"min_tokens": 0},
                {"window": 0}, {"max_hold_rounds": 0}):
        with pytest.raises(ConfigError):
            AimdConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        AimdLimit(0)
    assert AimdLimit(3, AimdConfig(initial=10)).limit == 3


events = st.lists(st.tuples(st.sampled_from(["send", "ok", "overload"]), st.floats(0.001, 20.0),
                            st.integers(0, 500)), max_size=300)


@settings(deadline=None, max_examples=150)
@given(ceiling=st.integers(1, 64), script=events)
def test_the_limit_stays_within_one_and_the_ceiling(ceiling: int, script: list[tuple[str, float, int]]) -> None:
    lim = AimdLimit(ceiling)
    in_flight: list = []
    for kind, seconds, tokens in script:
        if kind == "send" and len(in_flight) < lim.limit:
            in_flight.append(lim.on_send(len(in_flight) + 1))
        elif in_flight:
            t = in_flight.pop(tokens % len(in_flight))
            if kind == "ok":
                lim.on_success(t, seconds, tokens)
            else:
                lim.on_overload(t)
        assert 1 <= lim.limit <= ceiling
    base = lim.baseline_s()
    assert base is None or base > 0


def test_the_backend_takes_its_limits_and_timeouts_from_options() -> None:
    from thinktwice.lm import create

    lm = create("openai", base_urls="http://127.0.0.1:9/v1", max_concurrency=6, aimd={"initial": 2},
                timeout_s=1800, timeout_retries=1)
    (ep,) = lm._pool.endpoints
    assert ep.limiter.limit == 2 and ep.limiter.ceiling == 6 and lm.timeout_s == 1800 and lm.timeout_retries == 1
    fixed = create("openai", base_urls="http://127.0.0.1:9/v1", endpoint_max_concurrency=3,
                   adaptive_concurrency=False)
    assert fixed._pool.endpoints[0].limiter.limit == 3
    for bad in ({"aimd": {"nope": 1}}, {"aimd": {"initial": 0}}, {"timeout_retries": -1}, {"protocol_retries": -1},
                {"connect_timeout_s": 0}):
        with pytest.raises(ConfigError):
            create("openai", base_urls="http://127.0.0.1:9/v1", **bad)
