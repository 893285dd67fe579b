"""GSM8K (Cobbe et al., arXiv 2110.14168): grade-school math word problems with numeric answers.

Gold is the number after the last ``####``. A prediction is the number after the last explicit
marker (``#### N``, ``\\boxed{N}``, ``The answer is N``, ``Answer: N``), else the last number in
the text. Answers are compared as numbers (commas, ``$``, units and percent signs ignored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from thinktwice.errors import ConfigError, DataError
from thinktwice.tasks.datadir import hub_rows, load_rows
from thinktwice.tasks.numeric import NumericAnswers
from thinktwice.tasks.options import check_prompt_options, create_task
from thinktwice.tasks.prompts import GSM8K_TEMPLATE, chat_prompt, gsm8k_solution, select_shots, shots_for
from thinktwice.types import Problem, Prompt, SamplingParams

__all__ = ["Gsm8kTask", "gsm8k_gold"]


def gsm8k_gold(solution: str) -> str:
    """The final answer of a GSM8K reference solution: the text after the last ``####``,
    without ``,``, ``$`` and a trailing period."""
    if "####" not in solution:
        raise ValueError("no '####' in the solution")
    g = solution.rsplit("####", 1)[1].strip()
    return g.replace(",", "").replace("$", "").rstrip(".").strip()


@dataclass(frozen=True)
class Gsm8kTask(NumericAnswers):
    """GSM8K with a zero-shot (default) or seeded few-shot chat prompt.

    >>> t = Gsm8kTask()
    >>> t.extract("She pays $1,200 in total. The answer is 1,200."), t.equivalent("1200", "1,200.00")
    ('1200', True)
    """

    name: ClassVar[str] = "gsm8k"
    prompt_version: ClassVar[str] = "p1"
    grader_version: ClassVar[str] = "g1"

    data_dir: str | os.PathLike[str] | None = None
    path: str | os.PathLike[str] | None = None
    shots: int = 0
    seed: int = 0
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_prompt_options(self.shots, self.max_tokens)

    @classmethod
    def create(cls, **options: Any) -> Gsm8kTask:
        """Build from user options; unknown names and wrong types are ConfigErrors."""
        return create_task(cls, **options)

    @property
    def version(self) -> str:
        shots = f"-{self.shots}shot" if self.shots else ""
        return f"gsm8k-{self.prompt_version}-{self.grader_version}{shots}"

    # -- data -----------------------------------------------------------------------------------

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]:
        if split not in ("test", "train"):
            raise ConfigError(f"gsm8k has splits 'test' and 'train', not {split!r}")
        source, rows = load_rows(
            f"gsm8k/{split}.jsonl",
            data_dir=self.data_dir,
            path=self.path if split == "test" else None,
            required=("question", "answer"),
            hub=lambda: hub_rows("openai/gsm8k", "main", split),
        )
        out: list[Problem] = []
        for i, row in enumerate(rows[:limit] if limit is not None else rows):
            out.append(self._problem(row, i, split, source))
        return out

    def _problem(self, row: dict[str, Any], i: int, split: str, source: str) -> Problem:
        try:
            gold = gsm8k_gold(str(row["answer"]))
        except ValueError:
            raise DataError(f"{source}:{row.get('__line__', i + 1)}: answer has no '#### N' line") from None
        return Problem(
            id=str(row.get("id", f"gsm8k-{split}-{i}")),
            question=str(row["question"]),
            gold=gold,
            meta={"solution": row["answer"], "split": split},
        )

    @cached_property
    def _exemplars(self) -> list[Problem]:
        if self.shots == 0:
            return []
        return select_shots(self.load("train"), self.shots, self.seed)

    # -- prompting ------------------------------------------------------------------------------

    def prompt(self, problem: Problem) -> Prompt:
        shots = shots_for(self._exemplars, self.shots, problem.question)
        return chat_prompt(problem.question, GSM8K_TEMPLATE, shots, solution=gsm8k_solution)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, stop=("\n\nQuestion:",))

