"""MATH (Hendrycks et al., arXiv 2103.03874); MATH-500 by default (Lightman et al., arXiv 2305.20050).

The prediction is the content of the last ``\\boxed{}``/``\\fbox{}`` (braces balanced); answers
are compared by a cheap LaTeX normal form first and math-verify second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from thinktwice.errors import ConfigError
from thinktwice.tasks.datadir import hub_rows, load_rows
from thinktwice.tasks.extract import boxed, marked_answer
from thinktwice.tasks.grading import math_equal, normalize_math
from thinktwice.tasks.options import check_prompt_options, create_task
from thinktwice.tasks.prompts import MATH_TEMPLATE, chat_prompt, select_shots, shots_for
from thinktwice.types import Problem, Prompt, SamplingParams

__all__ = ["MathTask"]

# split -> (file under the data dir, Hugging Face dataset, config, hub split)
_SPLITS: dict[str, tuple[str, str | None, str | None, str]] = {
    "test": ("math500/test.jsonl", "HuggingFaceH4/MATH-500", None, "test"),
    "train": ("math/train_sample.jsonl", None, None, "train"),
}


@dataclass(frozen=True)
class MathTask:
    """MATH-500 (split "test") or a 1,000-problem sample of MATH train (split "train").

    ``fallback_marker``: when no ``\\boxed{}`` is present, also accept "The answer is X"
    (off by default: the prompt asks for a box, and lenient extraction inflates accuracy).

    >>> t = MathTask()
    >>> t.extract(r"so $\\boxed{\\dfrac{1}{2}}$."), t.equivalent(r"\\frac12", "0.5")
    ('\\\\dfrac{1}{2}', True)
    """

    name: ClassVar[str] = "math"
    prompt_version: ClassVar[str] = "p1"
    grader_version: ClassVar[str] = "g2"

    data_dir: str | os.PathLike[str] | None = None
    path: str | os.PathLike[str] | None = None
    shots: int = 0
    seed: int = 0
    max_tokens: int = 1024
    fallback_marker: bool = False

    def __post_init__(self) -> None:
        check_prompt_options(self.shots, self.max_tokens)

    @classmethod
    def create(cls, **options: Any) -> MathTask:
        """Build from user options; unknown names and wrong types are ConfigErrors."""
        return create_task(cls, **options)

    @property
    def version(self) -> str:
        shots = f"-{self.shots}shot" if self.shots else ""
        lenient = "-lenient" if self.fallback_marker else ""
        return f"math-{self.prompt_version}-{self.grader_version}{shots}{lenient}"

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]:
        if split not in _SPLITS:
            raise ConfigError(f"math has splits {', '.join(map(repr, _SPLITS))}, not {split!r}")
        rel, hub_name, hub_config, hub_split = _SPLITS[split]
        _, rows = load_rows(
            rel,
            data_dir=self.data_dir,
            path=self.path if split == "test" else None,
            required=("problem", "answer"),
            hub=(lambda: hub_rows(hub_name, hub_config, hub_split)) if hub_name else None,
        )
        sel = rows[:limit] if limit is not None else rows
        return [self._problem(r, i, split) for i, r in enumerate(sel)]

    @staticmethod
    def _problem(row: dict[str, Any], i: int, split: str) -> Problem:
        meta = {k: row[k] for k in ("solution", "subject", "level", "unique_id") if k in row}
        meta["split"] = split
        return Problem(
            id=str(row.get("unique_id") or f"math-{split}-{i}"),
            question=str(row["problem"]),
            gold=str(row["answer"]),
            meta=meta,
        )

    @cached_property
    def _exemplars(self) -> list[Problem]:
        if self.shots == 0:
            return []
        return select_shots(self.load("train"), self.shots, self.seed)

    def prompt(self, problem: Problem) -> Prompt:
        shots = shots_for(self._exemplars, self.shots, problem.question)
        return chat_prompt(problem.question, MATH_TEMPLATE, shots, solution=_solution)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, stop=("\n\nProblem:",))

    def extract(self, text: str) -> str | None:
        b = boxed(text)
        if b is not None and b.strip():
            return b.strip()
        if self.fallback_marker:
            m = marked_answer(text)
            if m:
                return m.strip().rstrip(".").strip("$ ") or None
        return None

    def canonical(self, answer: str) -> str:
        return normalize_math(answer)

    def equivalent(self, a: str, b: str) -> bool:
        return math_equal(a, b)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer is not None and problem.gold is not None and math_equal(problem.gold, answer)


def _solution(p: Problem) -> str:
    sol = str(p.meta.get("solution") or "")
    return sol if "\\boxed" in sol else f"{sol}\nThe final answer is $\\boxed{{{p.gold}}}$."
