"""The Task protocol, the AnswerFormat a strategy votes with, and the Query a strategy answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from thinktwice.types import Problem, Prompt, SamplingParams

__all__ = ["AnswerFormat", "Task", "Query"]


@runtime_checkable
class AnswerFormat(Protocol):
    """How answers are pulled out of text and compared. Strategies vote through this."""

    def extract(self, text: str) -> str | None:
        """The final answer in ``text``, or None when there is none (a no-vote, graded wrong)."""
        ...

    def canonical(self, answer: str) -> str:
        """A normal form used as a fast grouping key (``"1,000.0"`` -> ``"1000"``)."""
        ...

    def equivalent(self, a: str, b: str) -> bool:
        """True when two answers mean the same (``"0.5"`` and ``"\\frac{1}{2}"``)."""
        ...


@runtime_checkable
class Task(AnswerFormat, Protocol):
    """A data set with its prompt format, answer extraction and grader.

    ``version`` changes whenever the prompt or the grader changes, so runs are compared only
    when their task versions match; ``prompt_version`` and ``grader_version`` say which part.
    """

    name: str
    version: str
    prompt_version: str
    grader_version: str

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]: ...

    def prompt(self, problem: Problem) -> Prompt: ...

    def params(self) -> SamplingParams:
        """Default decoding settings for this task (max_tokens, stop strings)."""
        ...

    def grade(self, answer: str | None, problem: Problem) -> bool: ...


@dataclass(frozen=True)
class Query:
    """Everything a strategy needs to answer one problem."""

    problem: Problem
    prompt: Prompt
    answers: AnswerFormat
    params: SamplingParams = field(default_factory=SamplingParams)

    @classmethod
    def from_task(cls, task: Task, problem: Problem) -> Query:
        return cls(problem=problem, prompt=task.prompt(problem), answers=task, params=task.params())

    @property
    def question(self) -> str:
        return self.problem.question
