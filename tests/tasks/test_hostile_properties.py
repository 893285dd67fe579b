"""Property tests: every task's extract/grade and every answer format's canonical/equivalent is a
total function of generated hostile text (huge numbers, towers, deep nesting, NUL bytes, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktwice.serve.answer_format import GenericAnswerFormat
from thinktwice.strategies.voting import group_answers
from thinktwice.tasks.arith import ArithTask
from thinktwice.tasks.base import AnswerFormat
from thinktwice.tasks.code import HumanEvalTask
from thinktwice.tasks.gsm8k import Gsm8kTask
from thinktwice.tasks.jsonl import JsonlTask
from thinktwice.tasks.math import MathTask
from thinktwice.testing.bounded import within as bounded_within
from thinktwice.types import Problem

T = TypeVar("T")
LIMIT_S = 30.0  # "does not hang"; a typical example takes milliseconds

GSM8K, MATH, ARITH, CODE, GENERIC = Gsm8kTask(), MathTask(), ArithTask(), HumanEvalTask(), GenericAnswerFormat()
JSONL = {g: JsonlTask(path="unused.jsonl", grader=g) for g in ("numeric", "math", "exact", "contains")}
NUMERIC_FORMATS: list[AnswerFormat] = [GSM8K, ARITH, JSONL["numeric"], GENERIC]
TEXT_FORMATS: list[AnswerFormat] = [JSONL["exact"], JSONL["contains"]]
MATH_FORMATS: list[AnswerFormat] = [MATH, JSONL["math"]]

FRAGMENTS = [
    "\\boxed{", "\\fbox{", "\\boxed ", "}", "{", "(", ")", "[", "]", "^", "^{", "!", "_", "\\frac{",
    "\\frac", "\\dfrac", "\\sqrt{", "\\sqrt[", "\\binom{", "\\choose", "\\left(", "\\right)", "\\text{",
    "\\infty", "\\pi", "\\exp", "e", "E", "x", "$", "\\$", ".", ",", "-", "\u2212", "+", "*", "/", "/0",
    "1/0", "nan", "inf", "-inf", "NaN", "####", "#### ", "The answer is ", "Answer: ", "\n", " ", "\t",
    "\x00", "\x07", "```", "```python\n", "def f():\n", "\u0661", "\u0668", "\uff11", "\u00b2", "\u00bd",
    "%", "\\%", "{,}", "\\!", "\\,", "=", "x=", "\\cdot", "\\times", "\\\\", "\\{", "\\}", "10^{10^{10}}",
    "9^{9^{9^{9}}}", "(10^{100})!", "1e999", "1e10000000", "1e-10000000", "1e99999999999999999999",
    "0.333333", "1/3", "18", "18.0", "1,000", "-3",
]


@st.composite
def _numbers(draw: st.DrawFn) -> str:
    digits = draw(st.text("0123456789", min_size=1, max_size=5000))
    frac = draw(st.one_of(st.just(""), st.text("0123456789", max_size=30).map(lambda s: "." + s)))
    exp = draw(st.one_of(st.just(""), st.from_regex(r"[eE][-+]?[0-9]{1,20}", fullmatch=True)))
    return digits + frac + exp


_piece = st.one_of(st.sampled_from(FRAGMENTS), _numbers(), st.text(max_size=12))
_repeated = st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 3000)).map(lambda t: t[0] * t[1])
HOSTILE = st.lists(st.one_of(_piece, _piece, _repeated), max_size=10).map("".join)
GOLDS = st.one_of(st.sampled_from(["18", "0", "-3", "0.5", "\\frac{1}{2}", "1e10000000", "Paris", "(1,2)"]),
                  HOSTILE)
SETTINGS = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


def within(fn: Callable[[], T], seconds: float = LIMIT_S) -> T:
    return bounded_within(fn, seconds)


def _check_format(fmt: AnswerFormat, text: str, gold: str, reflexive: bool) -> None:
    a = fmt.extract(text)
    assert a is None or isinstance(a, str)
    verdict = fmt.grade(a, Problem("p", "q", gold)) if hasattr(fmt, "grade") else None
    assert verdict is None or isinstance(verdict, bool)
    if a is None:
        assert verdict in (None, False)  # no answer is never right
        return
    key = fmt.canonical(a)
    assert isinstance(key, str)
    assert isinstance(fmt.equivalent(a, gold), bool)
    assert isinstance(fmt.equivalent(gold, a), bool)
    if reflexive and key:
        assert fmt.equivalent(a, a), (type(fmt).__name__, a[:80])


@SETTINGS
@given(text=HOSTILE, gold=GOLDS)
def test_numeric_formats_are_total(text: str, gold: str) -> None:
    within(lambda: [_check_format(f, text, gold, reflexive=True) for f in NUMERIC_FORMATS])


@SETTINGS
@given(text=HOSTILE, gold=GOLDS)
def test_math_formats_are_total(text: str, gold: str) -> None:
    within(lambda: [_check_format(f, text, gold, reflexive=True) for f in MATH_FORMATS])


@SETTINGS
@given(text=HOSTILE, gold=GOLDS)
def test_text_formats_and_code_extraction_are_total(text: str, gold: str) -> None:
    def run() -> None:
        for f in TEXT_FORMATS:
            _check_format(f, text, gold, reflexive=True)
        code = CODE.extract(text)
        assert code is None or (isinstance(code, str) and code.strip())
        if code is not None:
            assert CODE.equivalent(code, code)

    within(run)


@SETTINGS
@given(answers=st.lists(st.one_of(st.none(), HOSTILE), max_size=6))
def test_votes_group_hostile_answers(answers: list[str | None]) -> None:
    """Grouping calls canonical on every answer and equivalent on every pair of keys."""
    for fmt in [GSM8K, MATH, GENERIC]:
        extracted = [None if a is None else fmt.extract(a) for a in answers]
        classes = within(lambda fmt=fmt, e=extracted: group_answers(e, fmt))
        members = sorted(i for c in classes for i in c.members)
        assert members == [i for i, a in enumerate(extracted) if a is not None]


@SETTINGS
@given(a=HOSTILE, b=HOSTILE)
def test_numeric_canonical_keys_agree_with_equivalence(a: str, b: str) -> None:
    """Equal canonical keys of two numbers mean equivalent answers (votes group consistently)."""
    for fmt in NUMERIC_FORMATS:
        x, y = fmt.extract(a), fmt.extract(b)
        if x is None or y is None:
            continue
        if within(lambda fmt=fmt, x=x, y=y: fmt.canonical(x) == fmt.canonical(y)):
            assert within(lambda fmt=fmt, x=x, y=y: fmt.equivalent(x, y)), (x[:60], y[:60])
