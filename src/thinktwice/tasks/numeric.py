"""The GSM8K-style numeric answer format shared by tasks whose answers are numbers.

Extraction takes an explicit marker first ('#### N', '\\boxed{N}', 'The answer is N'), else the last
number in the text; answers compare numerically (commas, units, decimals and fractions handled).
"""

from __future__ import annotations

from thinktwice.tasks.extract import first_number, last_number, marked_answer
from thinktwice.tasks.grading import number_canonical, numeric_equal
from thinktwice.types import Problem

__all__ = ["NumericAnswers"]


class NumericAnswers:
    """Mixin giving a task ``extract``, ``canonical``, ``equivalent`` and ``grade`` for numbers."""

    __slots__ = ()

    def extract(self, text: str) -> str | None:
        marked = marked_answer(text)
        if marked is not None:
            n = first_number(marked)
            if n is not None:
                return n
        return last_number(text)

    def canonical(self, answer: str) -> str:
        return number_canonical(answer) or " ".join(answer.split()).lower()

    def equivalent(self, a: str, b: str) -> bool:
        return numeric_equal(a, b)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer is not None and problem.gold is not None and numeric_equal(answer, problem.gold)
