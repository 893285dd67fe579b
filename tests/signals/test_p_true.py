"""P(True) and P(True) with context: prompt format, logprob reading, sampled fallback, billing."""

from __future__ import annotations

import math

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.registry import signals
from thinktwice.signals.p_true import option_probability, p_true_prompt
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Capabilities, Problem, Prompt, Sample, TokenStat


class Digits:
    def extract(self, text: str) -> str | None:
        toks = [t for t in text.split() if t.isdigit()]
        return toks[-1] if toks else None

    def canonical(self, a: str) -> str:
        return a

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


Q = Query(Problem("p", "What is 2+2?", "4"), Prompt.user("What is 2+2?"), Digits())


def c(text: str) -> Candidate:
    return Candidate(Sample(text), Digits().extract(text))


def test_prompt_keeps_the_paper_format() -> None:
    text = p_true_prompt("What is 2+2?", "4").messages[-1].content
    assert text == ("Question: What is 2+2?\nProposed Answer: 4\nIs the proposed answer:\n (A) True\n"
                    " (B) False\nThe proposed answer is:")
    ctx = p_true_prompt("Q?", "4", ["idea one", "idea two"], raw=True)
    assert ctx.raw is not None and "Here are some brainstormed ideas:\nidea one\nidea two\nProposed Answer: 4" in ctx.raw


def test_option_probability_sums_spellings_by_hand() -> None:
    top = ((" (A", math.log(0.3)), ("A", math.log(0.2)), (" (B", math.log(0.25)), (" maybe", math.log(0.1)))
    s = Sample(" (A", tokens=(TokenStat(" (A", math.log(0.3), top),))
    assert option_probability(s) == pytest.approx(0.5 / 0.75)
    # first position is "(" with no option mass: read the second position
    second = (("A", math.log(0.6)), ("B", math.log(0.2)))
    s2 = Sample(" (A", tokens=(TokenStat(" (", -0.1, ((" (", -0.1),)), TokenStat("A", math.log(0.6), second)))
    assert option_probability(s2) == pytest.approx(0.75)
    assert option_probability(Sample("B) False")) == 0.0  # text fallback without logprobs
    assert math.isnan(option_probability(Sample("I think so")))


async def test_p_true_with_scripted_logprobs_and_stage_billing() -> None:
    b = ScriptedBackend(rules={"Proposed Answer: so 4": [Reply("A", 0.8)], "Proposed Answer: so 5": [Reply("B", 0.7)]})
    m = Meter(b)
    got = await signals.create("p-true").score(Q, [c("so 4"), c("so 5"), c("so 4")], m)
    assert got == [1.0, 0.0, 1.0]  # the synthetic alternatives carry no option mass
    assert m.stages["p-true"].calls == 2  # identical prompts are asked once
    params = b.calls[0][1]
    assert params.max_tokens == 2 and params.top_logprobs == 5 and params.temperature == 0.0


async def test_p_true_without_logprobs_uses_verdict_frequency() -> None:
    caps = Capabilities(logprobs=False, native_n=True)
    b = ScriptedBackend(["A", "(A) True", "B", "A", "unsure"], capabilities=caps)
    m = Meter(b)
    got = await signals.create("p-true", samples=5).score(Q, [c("so 4")], m)
    assert got == [pytest.approx(3 / 4)]
    assert b.calls[0][2] == 5 and b.calls[0][1].temperature == 1.0
    assert m.stages["p-true"].completion_tokens > 0


async def test_p_true_context_lists_other_samples() -> None:
    b = ScriptedBackend(handler=lambda p, s, i: "A")
    cands = [c(f"so {k}") for k in range(8)]
    await signals.create("p-true-context", ideas=3).score(Q, cands, Meter(b))
    first = b.calls[0][0].text()
    assert "brainstormed ideas:\nso 1\nso 2\nso 3\nProposed Answer: so 0" in first
    assert len(b.calls) == 8


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        signals.create("p-true", top_logprobs=1)
    with pytest.raises(ConfigError):
        signals.create("p-true", show="everything")
