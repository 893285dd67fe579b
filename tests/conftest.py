"""Shared fixtures: a tiny in-memory task and an isolated THINKTWICE_HOME for every test."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from thinktwice.types import Problem, Prompt, SamplingParams


class TinyTask:
    """A minimal numeric task for tests: answers are the last integer in the text."""

    name = "tiny"
    version = "tiny-1"
    prompt_version = "1"
    grader_version = "1"

    def __init__(self, problems: Sequence[Problem] | None = None) -> None:
        self._problems = list(problems or [Problem(str(i), f"What is {i}+{i}?", str(2 * i)) for i in range(6)])

    def load(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        return self._problems[:limit] if limit is not None else list(self._problems)

    def prompt(self, problem: Problem) -> Prompt:
        return Prompt.user(problem.question)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=64)

    def extract(self, text: str) -> str | None:
        m = re.findall(r"-?\d+", text)
        return m[-1] if m else None

    def canonical(self, answer: str) -> str:
        return str(int(answer))

    def equivalent(self, a: str, b: str) -> bool:
        return int(a) == int(b)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer is not None and problem.gold is not None and int(answer) == int(problem.gold)


@pytest.fixture
def tiny_task() -> TinyTask:
    return TinyTask()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKTWICE_HOME", str(tmp_path_factory.mktemp("home")))
