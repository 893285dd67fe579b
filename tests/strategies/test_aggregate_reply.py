"""USC, self-agreement and GSA keep the aggregator's reply out of the candidates; "Response X" is 1-based."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.strategies import create_strategy

SAMPLES = ["s #### A", "s #### B", "s #### C", "s #### D"]


def order_of(d) -> list[int]:
    return next(t.detail["order"] for t in d.trace if t.kind == "aggregate")


async def test_usc_response_3_is_the_third_shown_candidate_not_the_answer_3(make_query) -> None:
    reply = "The most consistent response is Response 3"
    b = ScriptedBackend(SAMPLES, rules={"most consistent": [reply]})
    d = await create_strategy("usc", n=4).run(make_query(), b, seed=11)
    order = order_of(d)
    assert d.answer == "ABCD"[order[2]] and d.chosen == order[2]
    assert len(d.candidates) == 4 and all(c.stage == "sample" for c in d.candidates)
    assert "3" not in [c.answer for c in d.candidates]
    assert d.response == SAMPLES[order[2]]  # the user sees the chosen response, not the judgement
    agg = next(t for t in d.trace if t.kind == "aggregate")
    assert agg.detail["reply"] == reply
    assert d.usage.calls == 2 and d.stages["aggregate"].completion_tokens > 0  # still billed
    shown = b.calls[-1][0].text()
    assert "Response 1:\n" + SAMPLES[order[0]] in shown and "Response 0:" not in shown


@pytest.mark.parametrize("x", [0, 5])
async def test_usc_out_of_range_choice_falls_back_to_majority(make_query, x: int) -> None:
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B", "s #### C"],
                        rules={"most consistent": [f"The most consistent response is Response {x}"]})
    d = await create_strategy("usc", n=4).run(make_query(), b)
    assert d.answer == "B" and len(d.candidates) == 4
    assert any(t.kind == "fallback" and f"Response {x}" in t.detail["reason"] for t in d.trace)


@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), x=st.integers(1, 4))
def test_usc_maps_every_choice_through_the_shuffle(make_query, seed: int, x: int) -> None:
    b = ScriptedBackend(SAMPLES, rules={"most consistent": [f"The most consistent response is Response {x}"]})
    d = asyncio.run(create_strategy("usc", n=4).run(make_query(), b, seed=seed))
    assert d.answer == "ABCD"[order_of(d)[x - 1]]


async def test_self_agreement_reply_is_text_and_trace_not_a_candidate(make_query) -> None:
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"], rules={"agree on": ["Most say #### B"]})
    d = await create_strategy("self-agreement", n=3).run(make_query(), b)
    assert d.answer == "B" and d.chosen == 1 and d.text == "Most say #### B"
    assert [c.stage for c in d.candidates] == ["sample"] * 3
    agg = next(t for t in d.trace if t.kind == "aggregate")
    assert agg.detail["reply"] == "Most say #### B" and agg.detail["reply_answer"] == "B"


async def test_gsa_new_solution_is_text_and_trace_not_a_candidate(make_query) -> None:
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"], rules={"new, complete": ["Fresh #### 7"]})
    d = await create_strategy("gsa", n=3).run(make_query(), b)
    assert d.answer == "7" and d.chosen is None and d.response == "Fresh #### 7"
    assert len(d.candidates) == 3 and "7" not in [c.answer for c in d.candidates]
    assert d.usage.calls == 2 and d.stages["aggregate"].calls == 1  # one native-n draw + the new solution
