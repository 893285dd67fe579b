r"""A table of tricky (response, gold) pairs and the verdict our graders must give.

Row kinds: "gsm8k" and "math" pass the full model response through the task's extract() and
grade(); "math-ans" and "num-ans" grade an already-extracted answer string. Comments mark where
the verdict intentionally differs from naive string matching.
"""

from __future__ import annotations

import pytest

from thinktwice.tasks.gsm8k import Gsm8kTask
from thinktwice.tasks.math import MathTask
from thinktwice.types import Problem

GSM8K, MATH = Gsm8kTask(), MathTask()

ROWS: list[tuple[str, str | None, str, bool]] = [
    # ---- GSM8K: extraction + numeric equality -------------------------------------------------
    ("gsm8k", "The answer is 18.", "18", True),  # trailing period is not part of the number
    ("gsm8k", "So she makes $18.00 a day. The answer is $18.00.", "18", True),  # "$18.00" == 18
    ("gsm8k", "The answer is 1,000.", "1000", True),  # thousands separator (naive: "1,000" != "1000")
    ("gsm8k", "Total: 1,234,567 apples. The answer is 1,234,567", "1234567", True),
    ("gsm8k", "#### 72", "72", True),
    ("gsm8k", "blah\n#### 5\nmore text 9", "5", True),  # explicit marker beats the last number
    ("gsm8k", "The answer is 5. Check: 5 * 2 = 10", "5", True),  # marker beats the later 10
    ("gsm8k", "She pays 3 + 4 = 7 dollars", "7", True),  # no marker: last number
    ("gsm8k", "The answer is 18 dollars.", "18", True),  # words after the number
    ("gsm8k", "The answer is 5 cm.", "5", True),  # units
    ("gsm8k", "The answer is 25%.", "25", True),  # GSM8K golds state percentages without '%'
    ("gsm8k", "The answer is 0.5", ".5", True),
    ("gsm8k", "The answer is 1/2", "0.5", True),  # a fraction is compared as a number
    ("gsm8k", "The answer is 0.50", "0.5", True),
    ("gsm8k", "The answer is -3.", "-3", True),
    ("gsm8k", "The answer is -3.", "3", False),  # sign matters
    ("gsm8k", "The answer is 3.", "-3", False),
    ("gsm8k", "The answer is 3.0", "3", True),  # naive: "3.0" != "3"
    ("gsm8k", "The answer is 1e3", "1000", True),  # scientific notation
    ("gsm8k", "The answer is 2.5e-1", "0.25", True),
    ("gsm8k", "The answer is \\boxed{42}", "42", True),
    ("gsm8k", "First \\boxed{41} then corrected: \\boxed{42}", "42", True),  # last box wins
    ("gsm8k", "answer: 17", "17", True),  # case-insensitive marker
    ("gsm8k", "ANSWER IS 17", "17", True),
    ("gsm8k", "The answer is 17.5", "17", False),  # no rounding
    ("gsm8k", "I cannot solve this.", "17", False),  # no number at all -> None -> wrong
    ("gsm8k", "", "0", False),  # empty response is never right, not even for gold 0
    ("gsm8k", "The answer is 12", "120", False),  # prefix of the gold is not the gold
    ("gsm8k", "The answer is \\$1,200.", "1200", True),  # LaTeX-escaped dollar sign
    ("gsm8k", "It takes 1.5 hours. The answer is 90 minutes", "90", True),
    ("num-ans", None, "5", False),  # None is always wrong
    ("num-ans", "0.333333", "1/3", True),  # within relative tolerance 1e-6
    ("num-ans", "0.33", "1/3", False),
    # ---- MATH: \boxed{} extraction with brace balancing, then equivalence ---------------------
    ("math", "So $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True),  # nested braces
    ("math", "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", True),  # two levels of nesting
    ("math", "\\boxed{3} ... on reflection \\boxed{4}", "4", True),  # multiple boxes: last wins
    ("math", "\\boxed{3} ... on reflection \\boxed{4}", "3", False),
    ("math", "\\fbox{7}", "7", True),
    ("math", "The answer is 7.", "7", False),  # MATH requires \boxed{} (strict by default)
    ("math", "unclosed \\boxed{7", "7", False),
    ("math", "\\boxed{0.5}", "\\frac{1}{2}", True),  # naive string match fails
    ("math", "\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", True),  # \dfrac == \frac
    ("math", "\\boxed{\\frac12}", "\\frac{1}{2}", True),  # brace-less \frac12
    ("math", "\\boxed{\\tfrac{3}{4}}", "0.75", True),
    ("math", "\\boxed{5\\text{ cm}}", "5", True),  # units in \text{} are dropped
    ("math", "\\boxed{90^\\circ}", "90", True),  # degrees
    ("math", "\\boxed{90^{\\circ}}", "90", True),
    ("math", "\\boxed{1,000}", "1000", True),  # one number with a thousands separator
    ("math", "\\boxed{1,2}", "12", False),  # "1,2" is a list, not twelve
    ("math", "\\boxed{1,2}", "2,1", True),  # unbracketed lists compare as sets (math-verify)
    ("math", "\\boxed{(1,2)}", "(1, 2)", True),  # ordered pair, spacing ignored
    ("math", "\\boxed{(2,1)}", "(1,2)", False),  # ordered pairs are ordered
    ("math", "\\boxed{(0,1]}", "(0,1)", False),  # interval endpoints matter
    ("math", "\\boxed{[0,1)}", "[0,1)", True),
    ("math", "\\boxed{(-\\infty, 3)}", "(-\\infty,3)", True),
    ("math", "\\boxed{-3}", "3", False),  # negatives
    ("math", "\\boxed{\\text{(A)}}", "\\text{(A)}", True),
    ("math", "\\boxed{(A)}", "\\text{(A)}", True),  # \text{} wrapper removed
    ("math", "\\boxed{(B)}", "\\text{(A)}", False),
    ("math", "\\boxed{\\text{Tuesday}}", "\\text{Tuesday}", True),
    ("math", "\\boxed{Tuesday}", "\\text{Wednesday}", False),
    ("math", "\\boxed{50\\%}", "50", True),  # percent sign dropped
    ("math", "\\boxed{\\$18.00}", "18", True),
    ("math", "\\boxed{3.0}", "3", True),
    ("math", "\\boxed{1e3}", "1000", True),
    ("math", "\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt2}{2}", True),  # sqrt forms (math-verify)
    ("math", "\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", True),  # rationalised form
    ("math", "\\boxed{2\\sqrt{3}}", "\\sqrt{12}", True),
    ("math", "\\boxed{\\frac{\\pi}{2}}", "\\pi/2", True),  # pi forms
    ("math", "\\boxed{2\\pi}", "\\pi \\cdot 2", True),
    ("math", "\\boxed{3.14159}", "\\pi", False),  # a decimal approximation is not pi
    ("math", "\\boxed{x^2+2x+1}", "(x+1)^2", True),  # symbolic equality
    ("math", "\\boxed{x=5}", "5", True),  # "x = 5" accepted for a single-variable answer
    ("math", "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    (
        "math",
        "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        True,
    ),  # matrices: whitespace inside does not matter
    ("math", "\\boxed{\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("math", "\\boxed{10{,}080}", "10080", True),  # LaTeX thousands separator {,}
    ("math", "no box at all", "5", False),  # None is always wrong
    ("math", "\\boxed{}", "5", False),  # an empty box is no answer
    ("math-ans", None, "\\frac{1}{2}", False),
    ("math-ans", "\\frac{1}{3}", "0.333", False),  # 3 decimals are not 1/3
    ("math-ans", "\\{1,2\\}", "\\{2,1\\}", True),  # sets are unordered
]


@pytest.mark.parametrize(("kind", "pred", "gold", "expected"), ROWS)
def test_grading_table(kind: str, pred: str | None, gold: str, expected: bool) -> None:
    problem = Problem("row", "q", gold)
    if kind == "gsm8k":
        assert pred is not None
        verdict = GSM8K.grade(GSM8K.extract(pred), problem)
    elif kind == "math":
        assert pred is not None
        verdict = MATH.grade(MATH.extract(pred), problem)
    elif kind == "num-ans":
        verdict = GSM8K.grade(pred, problem)
    else:
        verdict = MATH.grade(pred, problem)
    assert verdict is expected, (kind, pred, gold)


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 60
    assert {r[3] for r in ROWS} == {True, False}


@pytest.mark.parametrize(
    ("a", "b"),
    [("1,000.0", "1000"), (".5", "1/2"), ("$18.00", "18"), ("3.0", "3"), ("1e3", "1000")],
)
def test_gsm8k_canonical_groups_equal_numbers(a: str, b: str) -> None:
    assert GSM8K.canonical(a) == GSM8K.canonical(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("\\dfrac{1}{2}", "\\frac12"), ("$5$", "5"), ("\\left(1,2\\right)", "(1, 2)"), ("90^\\circ", "90"),
     ("1,000", "1000"), ("\\text{(A)}", "(A)")],
)
def test_math_canonical_groups_cheap_forms(a: str, b: str) -> None:
    assert MATH.canonical(a) == MATH.canonical(b)


def test_math_canonical_keeps_lists_apart() -> None:
    assert MATH.canonical("1,2") != MATH.canonical("12")
