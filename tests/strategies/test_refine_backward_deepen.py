"""Self-refine flips, FOBAR combination arithmetic, iterative deepening continuations."""

from __future__ import annotations

import math
import re

import pytest

from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.backward import fobar_combine
from thinktwice.strategies.refine import FEEDBACK_REQUEST, REVISE_REQUEST, feedback_says_correct
from thinktwice.types import Budget


def refine_backend(initial, feedback, revisions):
    fb, rv = list(feedback), list(revisions)

    def handler(prompt, params, index):
        last = prompt.messages[-1].content
        if last == FEEDBACK_REQUEST:
            return fb.pop(0)
        if last == REVISE_REQUEST:
            return rv.pop(0)
        return initial

    return ScriptedBackend(handler=handler)


def test_feedback_parser():
    assert feedback_says_correct("All steps check out. The answer is correct.")
    assert not feedback_says_correct("The answer is not correct.")
    assert not feedback_says_correct("Step 2 adds wrongly.")


async def test_self_refine_records_flips_per_round(make_query):
    b = refine_backend(Reply("s #### 7"), ["Step 2 is wrong.", "Still a mistake.", "The answer is correct."],
                       ["r #### 8", "r #### 7"])
    d = await create_strategy("self-refine").run(make_query(gold="7"), b)
    assert d.answer == "7" and d.stopped_because == "converged"
    assert d.usage.calls == 6  # y0, fb1, y1, fb2, y2, fb3
    assert d.stages["feedback"].calls == 3 and d.stages["refine"].calls == 2
    flips = next(t.detail for t in d.trace if t.kind == "flips")
    assert flips["per_round"] == [{"round": 1, "right_to_wrong": 1, "wrong_to_right": 0},
                                  {"round": 2, "right_to_wrong": 0, "wrong_to_right": 1}]
    assert flips["right_to_wrong"] == 1 and flips["wrong_to_right"] == 1
    assert flips["initial_correct"] and flips["final_correct"]
    # the history grows: the last feedback prompt holds every earlier turn
    assert len(b.calls[-1][0].messages) == 1 + 5 * 2  # q + (y, FB) + (fb, REV) x2 + (y2, FB)


async def test_self_refine_round_cap_budget_and_no_gold(make_query):
    b = refine_backend(Reply("s #### 1"), ["bad"] * 5, ["r #### 2", "r #### 3", "r #### 4"])
    d = await create_strategy("self-refine", max_rounds=2).run(make_query(gold="3"), b)
    assert d.answer == "3" and d.stopped_because == "done" and d.usage.calls == 5
    flips = next(t.detail for t in d.trace if t.kind == "flips")
    assert (flips["right_to_wrong"], flips["wrong_to_right"]) == (0, 1)

    b = refine_backend(Reply("s #### 1"), ["bad"] * 5, ["r #### 2"] * 5)
    d = await create_strategy("self-refine").run(make_query(gold="1"), b, Budget(max_calls=2))
    assert d.answer == "1" and d.stopped_because == "budget" and d.usage.calls == 2

    b = refine_backend(Reply("s #### 1"), ["bad", "The answer is correct."], ["r #### 2"])
    d = await create_strategy("self-refine").run(make_query(gold=None), b)
    assert d.answer == "2" and not any(t.kind == "flips" for t in d.trace)


async def test_confidence_refine_skips_confident_and_stops_when_confident(make_query):
    b = refine_backend(Reply("s #### 1", confidence=0.95), [], [])
    d = await create_strategy("confidence-refine", threshold=0.9).run(make_query(), b)
    assert d.stopped_because == "confident" and d.usage.calls == 1 and d.answer == "1"

    b = refine_backend(Reply("s #### 1", confidence=0.5), ["bad", "bad"], [Reply("r #### 2", confidence=0.97)])
    d = await create_strategy("confidence-refine", threshold=0.9).run(make_query(), b)
    assert d.stopped_because == "confident" and d.answer == "2" and d.usage.calls == 3


QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def fobar_backend(forward):
    fwd = list(forward)

    def handler(prompt, params, index):
        text = prompt.text()
        if "unknown variable x" not in text:
            return fwd.pop(0)
        ans = re.search(r"answer to the above question is (\S+), what", text).group(1)
        truth, other = (3, 4) if "has x apples" in text else (4, 3)
        if ans == "7":
            return f"So x = {7 - other}. The value of x is {7 - other}."
        return f"The value of x is {truth if index % 2 == 0 else 8 - other + 10}."

    return ScriptedBackend(handler=handler)


async def test_fobar_combination_arithmetic(make_query):
    b = fobar_backend(["f #### 8"] * 6 + ["f #### 7"] * 4)
    d = await create_strategy("fobar").run(make_query(QUESTION), b)
    back = next(t.detail for t in d.trace if t.kind == "backward")
    assert back["recovered"] == {"8": 8, "7": 16} and back["trials"] == {"8": 16, "7": 16}
    eps = 1e-8
    p8 = math.sqrt(0.6) * math.sqrt((8 + eps / 2) / (24 + eps))
    p7 = math.sqrt(0.4) * math.sqrt((16 + eps / 2) / (24 + eps))
    assert d.answer == "7"
    assert d.confidence == pytest.approx(p7 / (p7 + p8))
    assert d.votes["8"] == pytest.approx(p8 / (p7 + p8))
    assert d.stages["fobar"].calls == 4 and d.usage.calls == 1 + 4  # 2 answers x 2 masks, n=8 each
    assert d.stages["fobar"].completion_tokens > 0
    assert fobar_combine({"a": 5, "b": 5}, {"a": 3, "b": 1}, 10, alpha=1.0) == pytest.approx({"a": 0.5, "b": 0.5})


async def test_fobar_unanimous_and_budget(make_query):
    b = fobar_backend(["f #### 7"] * 10)
    d = await create_strategy("fobar").run(make_query(QUESTION), b)
    assert d.answer == "7" and d.usage.calls == 1
    b = fobar_backend(["f #### 8"] * 6 + ["f #### 7"] * 4)
    d = await create_strategy("fobar").run(make_query(QUESTION), b, Budget(max_calls=3))
    assert d.answer == "8" and d.stopped_because == "budget" and d.usage.calls == 1


async def test_iterative_deepening_continues_with_trigger(make_query):
    def handler(prompt, params, index):
        if prompt.assistant_prefix:
            return Reply("recheck #### 7", confidence=0.95)
        return Reply("first #### 5", confidence=0.5)

    b = ScriptedBackend(handler=handler)
    d = await create_strategy("iterative-deepening", threshold=0.9).run(make_query(), b)
    assert d.answer == "7" and d.stopped_because == "confident" and d.usage.calls == 2
    prefix = b.calls[1][0].assistant_prefix
    assert prefix.startswith("first #### 5") and "Wait," in prefix
    assert d.response == prefix + "recheck #### 7"

    b = ScriptedBackend(handler=lambda p, s, i: Reply("x #### 5", confidence=0.5))
    d = await create_strategy("iterative-deepening", threshold=0.9, depth=2).run(make_query(), b)
    assert d.usage.calls == 3 and d.stopped_because == "max-samples"
    assert d.stages["deepen"].prompt_tokens > d.stages["sample"].prompt_tokens

    b = ScriptedBackend(handler=handler)
    d = await create_strategy("iterative-deepening", threshold=0.9).run(make_query(), b, Budget(max_calls=1))
    assert d.answer == "5" and d.stopped_because == "budget"


async def test_growth_stops_cleanly_when_the_context_is_full(make_query):
    from thinktwice.errors import ContextLengthExceeded

    def handler(prompt, params, index):
        if prompt.assistant_prefix:
            return Reply("", error=ContextLengthExceeded("prompt too long"))
        return Reply("first #### 5", confidence=0.5)

    d = await create_strategy("iterative-deepening", threshold=0.9).run(make_query(), ScriptedBackend(handler=handler))
    assert d.answer == "5" and d.stopped_because == "budget"
    assert any(t.kind == "stop" and t.detail["reason"] == "context full" for t in d.trace)
