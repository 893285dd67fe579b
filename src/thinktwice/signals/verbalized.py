"""Verbalized confidence: the model states how sure it is, 0-100 (METHODS §2.3).

Verbalized confidence is coarse (multiples of 5 or 10) and over-confident (Xiong et al., arXiv
2306.13063; SaySelf, arXiv 2405.20974): report its calibration, never accuracy gains alone.

Two modes: ``ask`` makes one extra call per distinct candidate (stage ``verbalized``, at most
``max_tokens`` generated, prompt ≈ P + L); ``inline`` parses a confidence the candidate already
wrote (no cost). The score is the parsed value / 100, clamped to [0, 1]; NaN when none is found.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Prompt, SamplingParams

__all__ = ["PROMPT_VERSION", "Verbalized", "VerbalizedConfig", "parse_confidence", "verbalized_prompt"]

PROMPT_VERSION = "verbalized-1"

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_NUM = re.compile(
    r"\b(?:(one\s+hundred|a\s+hundred|hundred)|(" + "|".join(_TENS) + r")(?:[\s-]+(" + "|".join(_UNITS) + r"))?"
    r"|(" + "|".join(_UNITS) + r"))\b",
    re.IGNORECASE,
)
_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_KEYWORD = re.compile(r"confiden(?:ce|t)|certain(?:ty)?|sure|probability|likelihood", re.IGNORECASE)
_PCT = re.compile(_NUM + r"\s*(?:%|percent\b|per\s*cent\b)", re.IGNORECASE)
_FRAC = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*(100|10|1)\b", re.IGNORECASE)
_ANSWERISH = re.compile(r"answer|=|total|result", re.IGNORECASE)
_BARE = re.compile(r"(?<![\w.])" + _NUM + r"(?![\w.]*\d)")


def _words_to_numbers(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return "100"
        if m.group(2):
            return str(_TENS[m.group(2).lower()] + (_UNITS[m.group(3).lower()] if m.group(3) else 0))
        return str(_UNITS[m.group(4).lower()])

    return _WORD_NUM.sub(repl, text)


def _value(num: str, scale: str | None = None) -> float:
    v = float(num)
    if scale is not None:
        return v * 100.0 / float(scale)
    if "." in num and v <= 1.0:  # "0.85" is a probability
        return v * 100.0
    return v


def _first(text: str) -> float | None:
    """The first confidence expression in ``text``: a percentage, a fraction of 100/10/1, or a number."""
    best: tuple[int, float] | None = None
    for rx, kind in ((_PCT, "pct"), (_FRAC, "frac"), (_BARE, "bare")):
        m = rx.search(text)
        if m is None:
            continue
        if kind == "pct":
            v = float(m.group(1))
        elif kind == "frac":
            v = _value(m.group(1), m.group(2))
        else:
            v = _value(m.group(1))
        if best is None or m.start() < best[0]:
            best = (m.start(), v)
    return None if best is None else best[1]


def parse_confidence(text: str) -> float:
    """A stated confidence as a probability in [0, 1], or NaN when ``text`` states none.

    Reads ``"Confidence: 85%"``, ``"85/100"``, ``"8 out of 10"``, ``"0.85"``, ``"I am 90% sure"``,
    ``"eighty-five percent"``. Text after a confidence keyword wins; otherwise a percentage or a
    fraction anywhere, otherwise a bare number in [0, 100] when it is the only number and the text
    states no answer. Values are clamped to [0, 100].

    >>> parse_confidence("Answer: 12. Confidence: 85%")
    0.85
    """
    if not text:
        return math.nan
    t = _words_to_numbers(text)
    value: float | None = None
    for m in reversed(list(_KEYWORD.finditer(t))):  # the last statement of confidence counts
        before = t[max(0, m.start() - 24): m.start()]  # "I am 90% sure"
        pm = list(_PCT.finditer(before))
        if pm:
            value = float(pm[-1].group(1))
            break
        value = _first(t[m.end(): m.end() + 40])
        if value is not None:
            break
    if value is None:
        pcts = list(_PCT.finditer(t)) or []
        fracs = list(_FRAC.finditer(t))
        if pcts:
            value = float(pcts[-1].group(1))
        elif fracs:
            value = _value(fracs[-1].group(1), fracs[-1].group(2))
        else:
            # a bare number counts only when it is the reply's one number and no answer is being stated
            # ("I'd say 75."), so "The final answer is 2." is not read as 2% confidence
            nums = [_value(m.group(1)) for m in _BARE.finditer(t)]
            if len(nums) == 1 and 0 <= nums[0] <= 100 and not _ANSWERISH.search(t):
                value = nums[0]
    if value is None or math.isnan(value):
        return math.nan
    return min(max(value, 0.0), 100.0) / 100.0


def verbalized_prompt(question: str, response: str) -> Prompt:
    return Prompt.user(
        f"Question: {question.strip()}\n\nProposed solution:\n{response.strip()}\n\n"
        "How confident are you that the proposed solution's final answer is correct? "
        "Reply with a single number from 0 to 100, in the form \"Confidence: N\"."
    )


@dataclass(frozen=True, slots=True)
class VerbalizedConfig:
    """``mode``: ``"ask"`` (one extra call) or ``"inline"`` (parse the candidate's own text);
    ``max_tokens`` of the reply; ``temperature`` of the reply (0 = greedy)."""

    mode: str = "ask"
    max_tokens: int = 16
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("ask", "inline"):
            raise ConfigError(f"mode must be 'ask' or 'inline', got {self.mode!r}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")


class Verbalized:
    """Verbalized confidence 0-100 (Lin et al., arXiv 2205.14334; Xiong et al., arXiv 2306.13063).

    Text only; ``ask`` costs one call per distinct candidate text with at most ``max_tokens``
    generated; ``inline`` costs nothing.
    """

    name = "verbalized"
    requires: frozenset[str] = frozenset()

    def __init__(self, config: VerbalizedConfig | None = None, **options: object) -> None:
        self.config = config or VerbalizedConfig(**options)  # type: ignore[arg-type]

    @property
    def needs_model(self) -> bool:
        return self.config.mode == "ask"

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter | None = None) -> list[float]:
        if self.config.mode == "inline":
            return [parse_confidence(c.sample.text) for c in candidates]
        if lm is None:
            raise ConfigError("signal 'verbalized' in mode 'ask' needs a model (pass a backend)")
        params = SamplingParams(max_tokens=self.config.max_tokens, temperature=self.config.temperature,
                                logprobs=False)
        texts = [c.sample.text for c in candidates]
        unique = list(dict.fromkeys(texts))

        async def ask(t: str) -> float:
            (s,) = await lm.sample(verbalized_prompt(query.question, t), params, 1, stage=self.name)
            return parse_confidence(s.text)

        values = dict(zip(unique, await asyncio.gather(*(ask(t) for t in unique))))
        return [values[t] for t in texts]
