"""Shared helpers for strategy tests: a tiny answer format and query builder."""

from __future__ import annotations

import re

import pytest

from thinktwice.tasks.base import Query
from thinktwice.types import Problem, Prompt, SamplingParams


class HashAnswers:
    """Answers are the word after '####'; equal after stripping."""

    def extract(self, text: str) -> str | None:
        m = re.findall(r"####\s*(\S+)", text)
        return m[-1] if m else None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()


def build_query(question: str = "What is it?", gold: str | None = None, max_tokens: int = 64) -> Query:
    return Query(
        problem=Problem(id="p1", question=question, gold=gold),
        prompt=Prompt.user(question),
        answers=HashAnswers(),
        params=SamplingParams(max_tokens=max_tokens),
    )


@pytest.fixture
def make_query():
    return build_query
