"""Weighted vote, best-of-n and Borda on scripted samples with hand-computed outcomes."""

from __future__ import annotations

import math

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.scoring import weights_from_scores
from thinktwice.strategies.weighted import borda_weights
from thinktwice.types import Budget


class ByText:
    """A test signal: the score is looked up from the candidate's answer."""

    name = "by-text"
    requires = frozenset()

    def __init__(self, table):
        self.table = table
        self.seen = 0

    async def score(self, query, candidates, lm):
        self.seen += len(candidates)
        return [self.table.get(c.answer, math.nan) for c in candidates]


REPLIES = ["w #### A", "w #### A", "w #### B", "w #### C", "w #### A"]


async def test_weighted_vote_overturns_majority_with_weights(make_query):
    sig = ByText({"A": 0.1, "B": 0.9, "C": 0.2})
    d = await create_strategy("weighted-vote", signal=sig, n=5).run(make_query(), ScriptedBackend(REPLIES))
    # A: 0.3, B: 0.9, C: 0.2
    assert d.answer == "B"
    assert d.votes["A"] == pytest.approx(0.3)
    assert d.confidence == pytest.approx(0.9 / 1.4)
    assert d.candidates[d.chosen].answer == "B"
    assert d.candidates[0].scores["by-text"] == 0.1


async def test_weighted_vote_log_scores_are_exponentiated(make_query):
    sig = ByText({"A": math.log(0.1), "B": math.log(0.25), "C": math.log(0.01)})
    d = await create_strategy("weighted-vote", signal=sig, n=5).run(make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "A"  # 0.3 vs 0.25 (scaled by the same factor)
    assert weights_from_scores([math.log(0.5), math.log(0.25), math.nan]) == pytest.approx([1.0, 0.5, 0.0])


async def test_best_of_n_picks_highest_scored_answer(make_query):
    sig = ByText({"A": 0.5, "B": 0.4, "C": 0.7})
    d = await create_strategy("best-of-n", signal=sig, n=5).run(make_query(), ScriptedBackend(REPLIES))
    assert d.answer == "C" and d.chosen == 3
    assert d.confidence == pytest.approx(0.7 / (0.5 * 3 + 0.4 + 0.7))


async def test_best_of_n_by_real_token_signal(make_query):
    replies = [Reply("t #### A", confidence=0.6), Reply("t #### B", confidence=0.95), Reply("t #### C", confidence=0.8)]
    d = await create_strategy("best-of-n:path-prob", n=3).run(make_query(), ScriptedBackend(replies))
    assert d.answer == "B"


def test_borda_weights_by_hand():
    # scores 0.2, 0.9, 0.5 -> ranks 3, 1, 2 -> weights (3-3+1)^.5, 3^.5, 2^.5
    assert borda_weights([0.2, 0.9, 0.5], 0.5) == pytest.approx([1.0, math.sqrt(3), math.sqrt(2)])
    assert borda_weights([0.2, 0.9, 0.5], 0.0) == [1.0, 1.0, 1.0]


async def test_borda_p_zero_is_majority_and_large_p_is_best_of_n(make_query):
    sig = ByText({"A": 0.1, "B": 0.9, "C": 0.2})
    d0 = await create_strategy("borda", signal=sig, n=5, p=0.0).run(make_query(), ScriptedBackend(REPLIES))
    assert d0.answer == "A" and d0.votes["A"] == 3.0
    d = await create_strategy("borda", signal=sig, n=5, p=0.5).run(make_query(), ScriptedBackend(REPLIES))
    # ranks: B=1 (w sqrt5), C=2 (w 2), A ties 3,4,5 (w sqrt3, sqrt2, 1): A = 4.146 > B 2.236
    assert d.answer == "A" and d.votes["A"] == pytest.approx(math.sqrt(3) + math.sqrt(2) + 1)
    d8 = await create_strategy("borda", signal=sig, n=5, p=8.0).run(make_query(), ScriptedBackend(REPLIES))
    assert d8.answer == "B"


async def test_selection_respects_budget_and_validates(make_query):
    sig = ByText({"A": 0.1, "B": 0.9, "C": 0.2})
    d = await create_strategy("weighted-vote", signal=sig, n=5).run(
        make_query(), ScriptedBackend(REPLIES), Budget(max_samples=3))
    assert len(d.candidates) == 3 and d.stopped_because == "budget"
    with pytest.raises(ConfigError):
        create_strategy("best-of-n", n=0)
    with pytest.raises(ConfigError):
        create_strategy("borda", p=-1.0)
