"""The ``rpc`` strategy runs the shared RPC core: same masks and answer as the ``rpc`` signal, and
its trace says when nothing could be pruned and why."""

from __future__ import annotations

import numpy as np
import pytest

from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.signals.consistency import RPC as RPCSignal
from thinktwice.signals.rpc import path_probs, reasoning_pruning
from thinktwice.signals.token_stats import mean_logprob
from thinktwice.strategies import create_strategy
from thinktwice.types import Decision


def prune_step(d: Decision) -> dict:
    (step,) = [t for t in d.trace if t.kind == "prune"]
    return dict(step.detail)


@pytest.mark.parametrize("seed", range(6))
async def test_strategy_and_signal_agree_on_random_pools(make_query, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([5, 12, 24]))
    confs = np.exp(np.concatenate([rng.normal(-1.8, 0.4, n // 3), rng.normal(-0.2, 0.08, n - n // 3)])).clip(1e-6, 1)
    answers = rng.choice(list("ABC"), n)
    replies = [Reply(f"s{i % (n - 2)} #### {a}", confidence=float(c)) for i, (a, c) in enumerate(zip(answers, confs))]
    d = await create_strategy("rpc", n=n).run(make_query(), ScriptedBackend(replies))
    step = prune_step(d)
    probs = path_probs([mean_logprob(c.sample.tokens) for c in d.candidates])
    assert step["kept"] == reasoning_pruning(probs).keep.tolist()
    scores = RPCSignal().score_sync(make_query(), list(d.candidates))
    best = max(scores)
    first_best = next(c.answer for c, s in zip(d.candidates, scores) if s == best)
    assert d.answer == first_best
    assert d.confidence == pytest.approx(best)


async def test_all_equal_pool_is_not_pruned_and_the_trace_says_why(make_query) -> None:
    replies = [Reply("same #### A", confidence=0.6)] * 3 + [Reply("same #### B", confidence=0.6)] * 2
    d = await create_strategy("rpc", n=5).run(make_query(), ScriptedBackend(replies))
    step = prune_step(d)
    assert step["kept"] == [True] * 5 and step["pruned"] == 0 and "equal" in step["fallback"]
    assert d.answer == "A" and d.confidence == pytest.approx(0.5)  # one distinct text per answer


async def test_two_samples_and_empty_samples_fall_back(make_query) -> None:
    d = await create_strategy("rpc", n=2).run(make_query(), ScriptedBackend([Reply("x #### A", confidence=0.2),
                                                                              Reply("y #### B", confidence=0.9)]))
    assert "fewer than 3" in prune_step(d)["fallback"] and d.answer == "B"
    # an empty completion has no tokens, so no path probability: nothing is pruned, it casts no vote
    replies = [Reply("", confidence=0.5)] + [Reply(f"t{i} #### A", confidence=0.1) for i in range(4)] \
        + [Reply(f"u{i} #### B", confidence=0.9) for i in range(4)]
    d = await create_strategy("rpc", n=9).run(make_query(), ScriptedBackend(replies))
    step = prune_step(d)
    assert "NaN" in step["fallback"] and step["kept"] == [True] * 9 and step["path_probs"][0] is None
    assert d.answer == "B" and d.votes["A"] == pytest.approx(0.4)
    assert d.candidates[0].scores["path-prob"] == 0.0


async def test_prune_and_dedupe_switches(make_query) -> None:
    replies = ([Reply(f"w{i} #### B", confidence=0.1) for i in range(4)]
               + [Reply("same #### A", confidence=0.9)] * 2 + [Reply("other #### A", confidence=0.85)])
    d = await create_strategy("rpc", n=7, prune=False).run(make_query(), ScriptedBackend(replies))
    assert prune_step(d)["fallback"] == "pruning off" and d.votes["B"] == pytest.approx(0.4)
    assert d.votes["A"] == pytest.approx(0.9 + 0.85)
    d = await create_strategy("rpc", n=7, dedupe=False).run(make_query(), ScriptedBackend(replies))
    assert d.votes["A"] == pytest.approx(0.9 * 2 + 0.85) and d.votes["B"] == 0.0
    step = prune_step(d)
    assert step["pruned"] == 4 and step["fallback"] is None and step["fit"]["converged"] in (True, False)
