"""The proxy's generic AnswerFormat: vote on the final answer when there is one, else on the text.

Extraction follows GSM8K conventions (Cobbe et al., arXiv 2110.14168; self-consistency, Wang et
al., arXiv 2203.11171): an explicit marker (``#### N``, ``\\boxed{}``, ``The answer is``) wins,
else the last number; a response with no number votes with its normalised full text, so
free-form answers still group when they agree word for word (case, spacing and final
punctuation aside).
"""

from __future__ import annotations

import re

from thinktwice.tasks.extract import last_number, marked_answer, parse_exact
from thinktwice.tasks.grading import number_canonical, numeric_equal

__all__ = ["GenericAnswerFormat", "normalize_text"]

_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower case, collapsed whitespace, no surrounding punctuation or quotes."""
    return _SPACE_RE.sub(" ", text).strip().strip(".!?\"'`*").strip().lower()


class GenericAnswerFormat:
    """Answers are numbers when the text has one (``"1,000"`` and ``"1000.0"`` agree), else text.

    >>> f = GenericAnswerFormat()
    >>> f.extract("so 3 + 4 = 7. The answer is 7."), f.extract("Paris."), f.canonical("1,000.0")
    ('7', 'paris', '1000')
    """

    def extract(self, text: str) -> str | None:
        marked = marked_answer(text)
        if marked is not None:
            num = last_number(marked) if parse_exact(marked) is None else marked
            if num is not None and parse_exact(num) is not None:
                return number_canonical(num) or num
            norm = normalize_text(marked)
            return norm or None
        num = last_number(text)
        if num is not None:
            return number_canonical(num) or num
        norm = normalize_text(text)
        return norm or None

    def canonical(self, answer: str) -> str:
        return number_canonical(answer) or normalize_text(answer)

    def equivalent(self, a: str, b: str) -> bool:
        if parse_exact(a) is not None and parse_exact(b) is not None:
            return numeric_equal(a, b)
        return self.canonical(a) == self.canonical(b)
