"""Step-level critique: the model names the earliest wrong step of a solution (or says none).

The protocol follows ProcessBench's (Zheng et al., arXiv 2412.06559; METHODS §8.3) with our own
prompt (the released template is eval/processbench.py's default): steps are shown numbered from 0
and the critic must name the earliest erroneous step, or -1 when every step is right. The same
verdicts give a process-level score usable as a value function by tree search: the share of steps
before the first error (1.0 when none is found). One extra call per candidate
(stage ``step-critic``), prompt ≈ P + L, at most ``max_tokens`` generated.

The verdict parser accepts what real models write: a final ``\\boxed{k}``, "Earliest error: Step k",
"the first error is in step k", "Step k is incorrect", "no error"/"all steps are correct", with
word numbers and "paragraph" for "step"; it returns None when it cannot tell.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.tasks.extract import boxed
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Prompt, SamplingParams

__all__ = ["PROMPT_VERSION", "step_prompt", "split_steps", "parse_earliest_error", "StepCritic", "step_value"]

PROMPT_VERSION = "step-critic-1"

_NUM_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "first": None,
}
_N = r"(-?\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_STEP = r"(?:step|paragraph|para\.?|line)\s*#?\s*"
_NONE_WORDS = r"(?:none|no\s+errors?|n/?a|null|nothing|-1)"

_MARKER = re.compile(
    r"earliest\s+(?:error|erroneous\s+step|mistake|incorrect\s+step)\s*(?:is|:|=|-|at|in)?\s*(?:in\s+|at\s+)?"
    r"(?:" + _STEP + _N + r"|" + _N + r"\b|(" + _NONE_WORDS + r"))",
    re.I,
)
_ERROR_AT = re.compile(
    r"(?:first|earliest)\s+(?:error|mistake|wrong\s+step|incorrect\s+step)\s+(?:\w+\s+){0,3}?(?:in|at|is|occurs\s+in)\s+"
    + _STEP + _N,
    re.I,
)
_STEP_IS_WRONG = re.compile(
    _STEP + _N + r"\s*(?:\)|:)?\s*(?:is|was|contains|has|introduces|makes)\s+(?:an?\s+|the\s+)?(?:first\s+)?"
    r"(?:incorrect|wrong|erroneous|flawed|mistaken|error|mistake|miscalculation|calculation\s+error)",
    re.I,
)
_ERROR_IN_STEP = re.compile(r"(?:error|mistake|miscalculation)\s+(?:is\s+|occurs\s+|appears\s+|was\s+made\s+)?(?:in|at)\s+"
                            + _STEP + _N, re.I)
_NEGATED = re.compile(r"\b(?:no|not|without|isn't|is\s+not|nothing)\b[^.\n]{0,25}$", re.I)
_ALL_RIGHT = re.compile(
    r"(?:no\s+(?:errors?|mistakes?)\s+(?:were\s+)?(?:found|detected|in\s+(?:any|the|this)|at\s+all)|"
    r"all\s+(?:the\s+)?steps\s+(?:are|were|look)\s+(?:correct|right|fine|valid)|"
    r"every\s+step\s+is\s+(?:correct|right|valid)|there\s+(?:are|is)\s+no\s+(?:errors?|mistakes?)|"
    r"the\s+(?:whole\s+|entire\s+)?solution\s+is\s+(?:entirely\s+|completely\s+|fully\s+)?correct|"
    r"no\s+(?:incorrect|erroneous|wrong)\s+steps?)",
    re.I,
)


def _num(token: str) -> int | None:
    t = token.strip().lower()
    if t in _NUM_WORDS:
        return _NUM_WORDS[t]
    try:
        return int(t)
    except ValueError:
        return None


def split_steps(text: str) -> list[str]:
    """Steps of a solution: its non-empty lines (the convention of our step-level search)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def step_prompt(problem: str, steps: Sequence[str]) -> Prompt:
    body = "\n\n".join(f"Step {i}: {s.strip()}" for i, s in enumerate(steps))
    return Prompt.user(
        "The following is a math problem and a solution split into numbered steps.\n\n"
        f"[Problem]\n{problem.strip()}\n\n[Solution]\n{body}\n\n"
        "Review the solution step by step. Find the earliest step that contains an error (a wrong "
        "calculation, wrong logic, or a wrong use of the facts of the problem). Steps are numbered "
        "from 0. End your reply with one line: \"Earliest error: Step k\" for the earliest wrong step k, "
        "or \"Earliest error: none\" if every step is correct."
    )


def parse_earliest_error(text: str, n_steps: int | None = None) -> int | None:
    """The earliest wrong step named in a critic's reply, -1 for "no error", None if unclear.

    An index outside ``0..n_steps-1`` (when ``n_steps`` is given) is treated as unclear.
    """

    def ok(v: int | None) -> int | None:
        if v is None:
            return None
        if v == -1:
            return -1
        if v < -1 or (n_steps is not None and v >= n_steps):
            return None
        return v

    last = boxed(text)  # the last box only: linear even on deeply nested input
    if last is not None:
        inner = re.sub(r"\\text\{([^}]*)\}", r"\1", last).strip().lower()
        inner = re.sub(r"^(?:step|paragraph)\s*", "", inner)
        if re.fullmatch(_NONE_WORDS, inner, re.I):
            return -1
        v = _num(inner)
        if v is not None:
            return ok(v)
    markers = list(_MARKER.finditer(text))
    if markers:
        m = markers[-1]
        if m.group(3):
            return -1
        return ok(_num(m.group(1) or m.group(2)))
    found: list[tuple[int, int]] = []
    for rx in (_ERROR_AT, _STEP_IS_WRONG, _ERROR_IN_STEP):
        for m in rx.finditer(text):
            before = text[max(0, m.start() - 40): m.start()]
            if _NEGATED.search(before) or re.search(r"\bnot\b", m.group(0), re.I):
                continue
            v = _num(m.group(1))
            if v is not None:
                found.append((m.start(), v))
    if found:
        return ok(min(v for _, v in found))
    if _ALL_RIGHT.search(text):
        return -1
    return None


def step_value(earliest: int | None, n_steps: int) -> float:
    """Share of steps before the earliest error (1.0 when none); NaN when the verdict is unclear."""
    if earliest is None or n_steps <= 0:
        return math.nan
    if earliest < 0:
        return 1.0
    return min(earliest, n_steps) / n_steps


@dataclass(frozen=True)
class StepCritic:
    """Signal ``step-critic``: the model finds the earliest wrong step of each candidate.

    Score = share of the candidate's steps before the first error (1.0 when it finds none, NaN
    when its reply cannot be parsed). Identical texts are critiqued once.
    """

    name: str = "step-critic"
    needs_model: ClassVar[bool] = True
    max_tokens: int = 512
    temperature: float = 0.0
    requires: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")

    async def verdicts(self, question: str, texts: Sequence[str], lm: Meter) -> list[tuple[int | None, int]]:
        """(earliest error, number of steps) per text."""
        params = SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, logprobs=False)
        uniq = list(dict.fromkeys(texts))

        async def one(text: str) -> tuple[int | None, int]:
            steps = split_steps(text)
            if not steps:
                return None, 0
            (s,) = await lm.sample(step_prompt(question, steps), params, 1, stage=self.name)
            return parse_earliest_error(s.text, len(steps)), len(steps)

        got = dict(zip(uniq, await asyncio.gather(*(one(t) for t in uniq))))
        return [got[t] for t in texts]

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        res = await self.verdicts(query.question, [c.sample.text for c in candidates], lm)
        return [step_value(e, n) for e, n in res]
