"""A task from any JSONL file: pick the question/answer/id fields and a grader by name.

Every non-blank line must be a JSON object with the named fields; a bad line is a DataError
naming ``FILE:LINE``, never silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from thinktwice.errors import ConfigError, DataError
from thinktwice.tasks.datadir import read_jsonl
from thinktwice.tasks.extract import boxed, first_number, last_number, marked_answer
from thinktwice.tasks.grading import GRADERS, get_grader, normalize_math, number_canonical
from thinktwice.tasks.options import check_prompt_options, create_task
from thinktwice.tasks.prompts import chat_prompt, select_shots, shots_for
from thinktwice.types import Problem, Prompt, SamplingParams

__all__ = ["JsonlTask"]

_TEMPLATES = {
    "numeric": (
        "Solve the following problem. Think step by step, then finish with a line of the form "
        "\"The answer is N.\"\n\nQuestion: {question}"
    ),
    "math": (
        "Solve the following problem. Reason step by step, and put your final answer within "
        "\\boxed{{}}.\n\nProblem: {question}"
    ),
    "exact": "{question}\n\nFinish with a line of the form \"The answer is X.\"",
    "contains": "{question}",
}


@dataclass(frozen=True)
class JsonlTask:
    """Problems from ``path``; ``grader`` is "numeric", "math", "exact" or "contains".

    ``template`` overrides the prompt (``{question}`` is replaced); ``shots`` few-shot examples
    come from ``train_path`` (its answers are used as the assistant turns).

    >>> JsonlTask(path="qa.jsonl", grader="exact").extract("... The answer is Paris.")
    'Paris'
    """

    name: ClassVar[str] = "jsonl"
    prompt_version: ClassVar[str] = "p1"
    grader_version: ClassVar[str] = "g1"

    path: str | os.PathLike[str] | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None
    grader: str = "numeric"
    template: str | None = None
    shots: int = 0
    seed: int = 0
    train_path: str | os.PathLike[str] | None = None
    max_tokens: int = 512
    data_dir: str | os.PathLike[str] | None = None  # accepted for CLI uniformity; unused

    def __post_init__(self) -> None:
        if self.path is None:
            raise ConfigError("the jsonl task needs path=FILE.jsonl")
        if self.grader not in GRADERS:
            raise ConfigError(f"unknown grader {self.grader!r}; valid graders: {', '.join(GRADERS)}")
        check_prompt_options(self.shots)
        if self.shots and self.train_path is None:
            raise ConfigError("few-shot prompts need train_path=FILE.jsonl")
        if self.template is not None and "{question}" not in self.template:
            raise ConfigError("template must contain '{question}'")

    @classmethod
    def create(cls, **options: Any) -> JsonlTask:
        """Build from user options; unknown names and wrong types are ConfigErrors."""
        return create_task(cls, **options)

    @property
    def version(self) -> str:
        shots = f"-{self.shots}shot" if self.shots else ""
        custom = "-custom" if self.template else ""
        return f"jsonl-{self.grader}-{self.prompt_version}-{self.grader_version}{shots}{custom}"

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]:
        path = self.path if split == "test" else self.train_path
        if path is None:
            raise ConfigError(f"no file for split {split!r} (set train_path for 'train')")
        required = [self.question_field, self.answer_field] + ([self.id_field] if self.id_field else [])
        rows = read_jsonl(path, required)
        out: list[Problem] = []
        seen: set[str] = set()
        for i, row in enumerate(rows if limit is None else rows[:limit]):
            pid = str(row[self.id_field]) if self.id_field else f"{split}-{i}"
            if pid in seen:
                raise DataError(f"{path}:{row['__line__']}: duplicate id {pid!r}")
            seen.add(pid)
            meta = {k: v for k, v in row.items() if k not in (self.question_field, "__line__")}
            out.append(Problem(pid, str(row[self.question_field]), str(row[self.answer_field]), meta))
        return out

    @cached_property
    def _exemplars(self) -> list[Problem]:
        return select_shots(self.load("train"), self.shots, self.seed) if self.shots else []

    def prompt(self, problem: Problem) -> Prompt:
        template = self.template or _TEMPLATES[self.grader]
        shots = shots_for(self._exemplars, self.shots, problem.question)
        return chat_prompt(problem.question, template, shots, solution=self._shot_answer)

    def _shot_answer(self, p: Problem) -> str:
        if self.grader == "math":
            return f"The final answer is $\\boxed{{{p.gold}}}$."
        if self.grader == "contains":
            return p.gold or ""
        return f"The answer is {p.gold}."

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens)

    def extract(self, text: str) -> str | None:
        if self.grader == "numeric":
            marked = marked_answer(text)
            n = first_number(marked) if marked else None
            return n if n is not None else last_number(text)
        if self.grader == "math":
            b = boxed(text)
            return b.strip() if b and b.strip() else None
        if self.grader == "exact":
            marked = marked_answer(text)
            if marked is not None:
                return marked.strip().rstrip(".").strip() or None
            lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            return lines[-1] if lines else None
        return text.strip() or None  # contains: the whole response

    def canonical(self, answer: str) -> str:
        if self.grader == "numeric":
            return number_canonical(answer) or " ".join(answer.split()).lower()
        if self.grader == "math":
            return normalize_math(answer)
        return " ".join(answer.split()).lower()

    def equivalent(self, a: str, b: str) -> bool:
        return get_grader(self.grader)(a, b)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        if answer is None or problem.gold is None:
            return False
        if self.grader == "contains":
            return get_grader("contains")(answer, problem.gold)
        if self.grader == "math":
            return get_grader("math")(problem.gold, answer)
        return get_grader(self.grader)(answer, problem.gold)
