"""Synthetic multi-step arithmetic word problems (the model organism's task), in GSM8K format.

Problems come from the seeded generator in :mod:`thinktwice.organism.arith` (pure Python, no
torch); difficulty knobs are constructor arguments. The train and test splits are disjoint by
construction (a hash of the question decides the split). Answers are graded as GSM8K's are: the
number after ``####``, else the last number in the text.

The prompt is the bare question: the organism has no chat template (``Prompt.raw``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.organism.arith import Difficulty, generate
from thinktwice.tasks.numeric import NumericAnswers
from thinktwice.types import Problem, Prompt, SamplingParams

__all__ = ["ArithTask"]


@dataclass(frozen=True)
class ArithTask(NumericAnswers):
    """Arithmetic word problems; ``steps``, ``max_operand``, ``distractors`` set the difficulty.

    >>> t = ArithTask(steps=2)
    >>> p = t.load("test", limit=1)[0]
    >>> t.grade(t.extract("3+4=7.\\n#### " + p.gold), p)
    True
    """

    name: ClassVar[str] = "arith"
    prompt_version: ClassVar[str] = "p1"
    grader_version: ClassVar[str] = "g1"

    steps: int = 7  # the default difficulty: the 'small' organism gets about half right greedily
    min_steps: int | None = None
    max_operand: int = 9
    distractors: int = 1
    seed: int = 0
    size: int = 1000  # problems per split when no limit is given
    max_tokens: int = 160

    def __post_init__(self) -> None:
        _ = self.difficulty  # validates the knobs
        if self.size < 1 or self.max_tokens < 1:
            raise ConfigError("size and max_tokens must be >= 1")

    @property
    def difficulty(self) -> Difficulty:
        return Difficulty(steps=self.steps, min_steps=self.min_steps, max_operand=self.max_operand,
                          distractors=self.distractors)

    @property
    def version(self) -> str:
        d = self.difficulty
        rng = f"{d.min_steps}-" if d.min_steps is not None else ""
        return (f"arith-{self.prompt_version}-{self.grader_version}-s{rng}{d.steps}-o{d.max_operand}"
                f"-d{d.distractors}-seed{self.seed}")

    def load(self, split: str = "test", limit: int | None = None) -> Sequence[Problem]:
        if split not in ("test", "train"):
            raise ConfigError(f"arith has splits 'test' and 'train', not {split!r}")
        n = self.size if limit is None else limit
        out = []
        for i, p in enumerate(islice(generate(self.seed, self.difficulty, split=split), n)):
            out.append(Problem(id=f"arith-{split}-{i}", question=p.question, gold=str(p.answer),
                               meta={"steps": p.meta["steps"], "solution": p.solution(), "split": split}))
        return out

    def prompt(self, problem: Problem) -> Prompt:
        return Prompt(raw=problem.question.strip() + "\n")

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens)
