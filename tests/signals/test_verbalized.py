"""Verbalized confidence: a robust parser tested on realistic replies, and the signal's two modes."""

from __future__ import annotations

import math

import pytest

from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.registry import signals
from thinktwice.signals.verbalized import parse_confidence
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Problem, Prompt, Sample

CASES = [
    ("Confidence: 85%", 0.85),
    ("Confidence: 85", 0.85),
    ("confidence - 70 %", 0.70),
    ("85/100", 0.85),
    ("I'd put it at 8 out of 10.", 0.80),
    ("Confidence: 0.85", 0.85),
    ("I am 90% sure that the answer is 18.", 0.90),
    ("The answer is 42. Confidence: 95%", 0.95),
    ("Confidence level: eighty-five percent", 0.85),
    ("My confidence is ninety", 0.90),
    ("Confidence: 150%", 1.0),
    ("Confidence: 100", 1.0),
    ("**Confidence:** 60", 0.60),
    ("I'm about 75 percent certain.", 0.75),
    ("Confidence: 0", 0.0),
    ("confidence = 7/10", 0.70),
    ("The answer is 12.\nConfidence: 1.0", 1.0),
    ("Probability that this is correct: 0.3", 0.30),
    ("Total is $1,234 and my confidence is 65%", 0.65),
    ("I'd say 75.", 0.75),
]


@pytest.mark.parametrize(("text", "want"), CASES)
def test_parse_confidence(text: str, want: float) -> None:
    assert parse_confidence(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["", "I am not sure.", "Confidence: high", "The answer is 4000.",
                                  "The proposed solution's final answer is 2.", "So 3 + 4 = 7 and 7 * 2 = 14"])
def test_parse_confidence_none(text: str) -> None:
    assert math.isnan(parse_confidence(text))


class Digits:
    def extract(self, text: str) -> str | None:
        return None

    def canonical(self, a: str) -> str:
        return a

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


Q = Query(Problem("p", "What is 2+2?", "4"), Prompt.user("What is 2+2?"), Digits())


async def test_verbalized_ask_bills_one_call_per_distinct_text() -> None:
    b = ScriptedBackend(rules={"so 4": ["Confidence: 90"], "so 5": ["Confidence: 20%"]})
    m = Meter(b)
    cands = [Candidate(Sample(t), None) for t in ("so 4", "so 5", "so 4")]
    assert await signals.create("verbalized").score(Q, cands, m) == pytest.approx([0.9, 0.2, 0.9])
    assert m.stages["verbalized"].calls == 2
    assert "0 to 100" in b.calls[0][0].text()


async def test_verbalized_inline_makes_no_call() -> None:
    cands = [Candidate(Sample("4. Confidence: 60%"), None)]
    sig = signals.create("verbalized", mode="inline")
    assert not sig.needs_model
    assert await sig.score(Q, cands, None) == pytest.approx([0.6])
