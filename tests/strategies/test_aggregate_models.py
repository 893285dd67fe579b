"""USC, self-agreement and GSA: one aggregation call over the samples; parse or fall back."""

from __future__ import annotations

from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.aggregate import parse_usc_choice
from thinktwice.types import Budget


def test_parse_usc_choice():
    assert parse_usc_choice("The most consistent response is Response 3.") == 3
    assert parse_usc_choice("the most consistent response is **Response 12**") == 12
    assert parse_usc_choice("I cannot decide") is None


async def test_usc_maps_shown_index_back_through_the_shuffle(make_query):
    samples = ["s #### A", "s #### B", "s #### C"]
    b = ScriptedBackend(samples, rules={"most consistent": ["The most consistent response is Response 1"]})
    d = await create_strategy("usc", n=3).run(make_query(), b, seed=5)
    order = next(t.detail["order"] for t in d.trace if t.kind == "aggregate")
    assert d.answer == ["A", "B", "C"][order[0]]
    assert d.chosen == order[0]
    assert d.stages["aggregate"].calls == 1 and d.usage.calls == 2
    agg_prompt = b.calls[-1][0].text()
    assert all(s.strip() in agg_prompt for s in samples)
    assert d.stages["aggregate"].prompt_tokens > d.stages["sample"].prompt_tokens  # grows with n


async def test_usc_falls_back_to_majority(make_query):
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"], rules={"most consistent": ["no idea"]})
    d = await create_strategy("usc", n=3).run(make_query(), b)
    assert d.answer == "B" and any(t.kind == "fallback" for t in d.trace)
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"])
    d = await create_strategy("usc", n=3).run(make_query(), b, Budget(max_calls=1))
    assert d.answer == "B" and d.stopped_because == "budget" and d.usage.calls == 1


async def test_self_agreement_and_gsa_write_answers(make_query):
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"], rules={"agree on": ["They agree: #### B"]})
    d = await create_strategy("self-agreement", n=3).run(make_query(), b)
    assert d.answer == "B" and d.chosen == 1 and d.text == "They agree: #### B"
    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"], rules={"new, complete": ["Fresh work #### 7"]})
    d = await create_strategy("gsa", n=3).run(make_query(), b)
    assert d.answer == "7" and d.chosen is None and d.response == "Fresh work #### 7"
    assert [c.stage for c in d.candidates] == ["sample"] * 3  # the new solution is the text, not a candidate


async def test_aggregation_falls_back_when_the_context_is_too_small(make_query):
    from thinktwice.errors import ContextLengthExceeded
    from thinktwice.lm.scripted import Reply

    b = ScriptedBackend(["s #### A", "s #### B", "s #### B"],
                        rules={"most consistent": [Reply("", error=ContextLengthExceeded("too long"))]})
    d = await create_strategy("usc", n=3).run(make_query(), b)
    assert d.answer == "B" and d.stopped_because == "budget"
    assert any(t.kind == "fallback" and "context" in t.detail["reason"] for t in d.trace)
