"""Self-critique verdicts and FOBAR / self-verification backward checks on the scripted backend."""

from __future__ import annotations

import math
import re

import pytest

from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.registry import signals
from thinktwice.signals.backward import backward_scores, extract_x, masks
from thinktwice.signals.critique import PROMPT_VERSION, parse_verdict, verdict_probability
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Capabilities, Problem, Prompt, Sample, SamplingParams, TokenStat


class Num:
    def extract(self, text: str) -> str | None:
        m = re.findall(r"-?\d+(?:\.\d+)?", text)
        return m[-1] if m else None

    def canonical(self, a: str) -> str:
        return str(float(a))

    def equivalent(self, a: str, b: str) -> bool:
        return float(a) == float(b)


QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"
Q = Query(Problem("p", QUESTION, "8"), Prompt.user(QUESTION), Num())


def c(text: str) -> Candidate:
    return Candidate(Sample(text), Num().extract(text))


# --- self-critique ---------------------------------------------------------------------------


def test_parse_verdict() -> None:
    assert PROMPT_VERSION
    assert parse_verdict("Step 1 ok.\nVerdict: correct") is True
    assert parse_verdict("Verdict: **incorrect**") is False
    assert parse_verdict("Verdict - wrong.") is False
    assert parse_verdict("Verdict: incorrect ... on reflection, Verdict: correct") is True
    assert parse_verdict("Looks fine to me.") is None
    assert parse_verdict("The proposed solution is correct.") is True  # no verdict line
    assert parse_verdict("Step 2 fails, so the answer is wrong.") is False


def test_verdict_probability_reads_logprobs_at_the_verdict_word() -> None:
    toks = (TokenStat("Verdict:", -0.1, ()),
            TokenStat(" correct", math.log(0.6), ((" correct", math.log(0.6)), (" incorrect", math.log(0.2)),
                                                  (" unclear", math.log(0.1)))))
    s = Sample("Verdict: correct", tokens=toks)
    assert verdict_probability(s) == pytest.approx(0.75)
    assert verdict_probability(Sample("Verdict: incorrect")) == 0.0
    assert math.isnan(verdict_probability(Sample("no idea")))


async def test_self_critique_signal_scores_and_bills() -> None:
    b = ScriptedBackend(rules={"so 8": ["Check: 3+5=8.\nVerdict: correct"],
                               "so 9": ["3+5 is not 9.\nVerdict: incorrect"],
                               "so 7": ["Hmm."]},
                        capabilities=Capabilities(logprobs=False))
    m = Meter(b)
    got = await signals.create("self-critique").score(Q, [c("so 8"), c("so 9"), c("so 7")], m)
    assert got[:2] == [1.0, 0.0] and math.isnan(got[2])
    assert m.stages["self-critique"].calls == 3
    assert "Verdict: correct" in b.calls[0][0].text()
    assert b.calls[0][1].logprobs is False


async def test_self_critique_uses_synthetic_logprobs_when_available() -> None:
    b = ScriptedBackend(handler=lambda p, s, i: "ok. Verdict: correct")
    got = await signals.create("self-critique").score(Q, [c("so 8")], Meter(b))
    # the synthetic top list has the chosen word plus <alt> tokens: all verdict mass is on "correct"
    assert got == [1.0]
    assert b.calls[0][1].top_logprobs == 5


# --- backward ---------------------------------------------------------------------------------


def test_masks_and_extraction() -> None:
    ms = masks(QUESTION)
    assert [m.value for m in ms] == [3.0, 5.0]
    assert ms[0].text.startswith("Tom has x apples and buys 5 more")
    assert [m.value for m in masks("It costs $1,200.50 for 2 days.")] == [1200.5, 2.0]
    assert extract_x("so x = 4. The value of x is 3.") == 3.0
    assert extract_x("x must be 12") == 12.0
    assert extract_x("no idea") is None


def backward_handler(prompt: Prompt, params: SamplingParams, i: int) -> str:
    """Recovers the masked number exactly when the proposed answer is 8 (the right one)."""
    text = prompt.text()
    answer = re.search(r"answer to the above question is (\S+),", text).group(1)
    masked_3 = "Tom has x apples" in text
    if answer == "8":
        return f"The value of x is {3 if masked_3 else 5}."
    # wrong answer: recovers the number only on even draws
    return f"The value of x is {3 if masked_3 else 5}." if i % 2 == 0 else "The value of x is 1."


async def test_fobar_scores_are_recovery_shares_and_cost_is_reported() -> None:
    b = ScriptedBackend(handler=backward_handler)
    m = Meter(b)
    cands = [c("so 8"), c("so 9"), c("so 8.0"), c("nothing")]
    got = await signals.create("fobar", m_b=4).score(Q, cands, m)
    assert got == [1.0, 0.5, 1.0, 0.0]
    # 2 distinct answers x 2 masked numbers = 4 calls of 4 samples
    assert m.stages["fobar"].calls == 4 and m.samples_drawn == 16
    assert all(n == 4 for _, _, n in b.calls)
    assert "If we know the answer to the above question is 8, what is the value of unknown variable x?" in (
        b.calls[0][0].text())


async def test_fobar_skips_when_answers_agree() -> None:
    b = ScriptedBackend(handler=backward_handler)
    m = Meter(b)
    got = await backward_scores(Q, [c("so 8"), c("8"), c("none")], m, m_b=8)
    assert got == [1.0, 1.0, 0.0]
    assert b.calls == [] and m.usage.calls == 0


async def test_self_verification_rewrites_then_masks_the_statement() -> None:
    def handler(prompt: Prompt, params: SamplingParams, i: int) -> str:
        text = prompt.text()
        if "declarative statement" in text:
            ans = re.search(r"Answer: (\S+)", text).group(1)
            return f"Tom has 3 apples, buys 5 more, and has {ans} apples."
        m = re.search(r"has (\S+) apples\.", text)
        ans = m.group(1)
        if "Tom has x apples" in text:
            return f"The value of x is {float(ans) - 5:g}."
        return f"The value of x is {float(ans) - 3:g}."

    b = ScriptedBackend(handler=handler)
    m = Meter(b)
    got = await signals.create("self-verification", m_b=2).score(Q, [c("so 8"), c("so 9")], m)
    assert got == [1.0, 0.0]
    # per answer: 1 rewrite + 2 masked statements
    assert m.stages["self-verification"].calls == 6


async def test_backward_verify_counts_per_distinct_answer_for_the_fobar_strategy() -> None:
    from thinktwice.signals.backward import BackwardConfig, backward_verify

    b = ScriptedBackend(handler=backward_handler)
    res = await backward_verify(Q, ["8", "9", "8.0"], Meter(b), BackwardConfig(m_b=4, max_masks=1))
    assert res.ran and res.trials == {"8": 4, "9": 4}
    assert res.recovered == {"8": 4, "9": 2} and res.share("9") == 0.5
    assert math.isnan(res.share("10"))
    skipped = await backward_verify(Q, ["8", "8.0"], Meter(b))
    assert not skipped.ran and skipped.trials == {}


def test_backward_masks_skip_numbers_too_large_for_a_float() -> None:
    from thinktwice.signals.backward import masks

    # a 400-digit number used to become inf, and two infs then counted as the same value
    found = masks(f"Tom has {'9' * 400} apples and {'9' * 401} pears and 3 plums.")
    assert [m.value for m in found] == [3.0]


def test_step_verdict_reads_the_last_box_of_deeply_nested_input() -> None:
    from thinktwice.signals.step_critic import parse_earliest_error

    assert parse_earliest_error("\\boxed{" * 20000 + "x" + "} so \\boxed{2}", n_steps=5) == 2
