"""Weighted vote, best-of-n and Borda fall back to the plain majority, and say so, when scores are missing."""

from __future__ import annotations

import math

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.types import Budget, SamplingParams

# majority A (3 of 5); a vote weighted by position ((5 - r + 1) ** 0.5) would pick B
REPLIES = ["w #### B", "w #### B", "w #### A", "w #### A", "w #### A"]


class ModelJudge:
    """A signal that asks the model once per candidate (as P(True) does), through the run's Meter."""

    name = "judge"
    requires: frozenset[str] = frozenset()

    async def score(self, query, candidates, lm):  # type: ignore[no-untyped-def]
        out = []
        for _ in candidates:
            await lm.sample(query.prompt, SamplingParams(max_tokens=1), 1, stage="score")
            out.append(0.9)
        return out


class Fixed:
    """A signal returning fixed scores in candidate order."""

    name = "fixed"
    requires: frozenset[str] = frozenset()

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    async def score(self, query, candidates, lm):  # type: ignore[no-untyped-def]
        return self.scores[: len(candidates)]


def _fallback(d):  # type: ignore[no-untyped-def]
    steps = [t for t in d.trace if t.kind == "fallback"]
    assert len(steps) == 1, d.trace
    return steps[0].detail


async def test_borda_out_of_budget_is_the_plain_majority_and_says_so(make_query):
    # one call draws the 5 samples (native n); the judge's first call finds the budget spent
    d = await create_strategy("borda", signal=ModelJudge(), n=5).run(
        make_query(), ScriptedBackend(REPLIES + ["x"] * 5), Budget(max_calls=1))
    assert d.answer == "A" and d.votes == {"B": 2.0, "A": 3.0}
    assert _fallback(d) == {"signal": "judge", "reason": "scores missing", "to": "majority",
                            "tallies": {"B": 2.0, "A": 3.0}}
    assert d.stopped_because == "budget" and d.usage.calls == 1
    assert any(t.kind == "budget" and t.detail.get("during") == "scoring" for t in d.trace)


async def test_best_of_n_out_of_budget_answers_the_majority_instead_of_none(make_query):
    d = await create_strategy("best-of-n", signal=ModelJudge(), n=5).run(
        make_query(), ScriptedBackend(REPLIES + ["x"] * 5), Budget(max_calls=1))
    assert d.answer == "A" and d.candidates[d.chosen].answer == "A"
    assert _fallback(d)["reason"] == "scores missing" and d.stopped_because == "budget"


async def test_weighted_vote_out_of_budget_notes_the_fallback(make_query):
    d = await create_strategy("weighted-vote", signal=ModelJudge(), n=5).run(
        make_query(), ScriptedBackend(REPLIES + ["x"] * 5), Budget(max_calls=1))
    assert d.answer == "A" and _fallback(d)["reason"] == "scores missing"


async def test_scored_runs_do_not_fall_back(make_query):
    d = await create_strategy("borda", signal=ModelJudge(), n=5).run(make_query(), ScriptedBackend(REPLIES + ["x"] * 5))
    assert not any(t.kind == "fallback" for t in d.trace) and d.usage.calls == 6


async def test_zero_weights_fall_back_to_the_majority(make_query):
    # all-zero weights would tie every class at 0 and hand the vote to the first class (B)
    d = await create_strategy("weighted-vote", signal=Fixed([0.0] * 5), n=5).run(make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "A" and _fallback(d)["reason"] == "no positive weight"
    # one positive weight decides alone
    d = await create_strategy("weighted-vote", signal=Fixed([0.0, 0.5, 0.0, 0.0, 0.0]), n=5).run(
        make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "B" and not any(t.kind == "fallback" for t in d.trace)


async def test_partly_missing_scores_still_select(make_query):
    # best-of-n passes over the unscored candidates; Borda ranks them last but lets them vote
    scores = [math.nan, 0.2, math.nan, 0.1, math.nan]
    d = await create_strategy("best-of-n", signal=Fixed(scores), n=5).run(make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "B" and d.chosen == 1 and not any(t.kind == "fallback" for t in d.trace)
    d = await create_strategy("borda", signal=Fixed(scores), n=5, p=8.0).run(make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "B" and not any(t.kind == "fallback" for t in d.trace)
