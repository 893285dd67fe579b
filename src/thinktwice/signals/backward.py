"""Backward verification: can the model recover a masked number of the question from a candidate answer?

FOBAR (Jiang et al., arXiv 2308.07758, METHODS §5.1): for every number in the question, replace it
with ``x`` and ask "If we know the answer to the above question is {A}, what is the value of unknown
variable x?"; sample ``m_b`` backward chains per (masked question, distinct answer); a candidate's
score is the share of its chains that recover the masked number. Self-verification (Weng et al.,
arXiv 2212.09561, §5.2) first has the model rewrite question and answer as one declarative
statement, then masks the numbers of that statement.

Backward runs only when the candidates hold more than one distinct answer; otherwise every
answered candidate scores 1.0 and no call is made. Candidates without an answer score 0.0.
Cost (FOBAR): ``#distinct answers × #masked numbers`` calls of ``m_b`` samples each (one call with
native ``n``), at most ``max_tokens`` generated per sample; self-verification adds one rewrite
call per distinct answer. The strategies' FOBAR combination (``P_F^α·P_B^(1-α)``) reads
:func:`backward_verify` counts.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.strategies.voting import group_answers
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Prompt, SamplingParams

__all__ = [
    "PROMPT_VERSION",
    "BackwardConfig",
    "BackwardResult",
    "Fobar",
    "Mask",
    "SelfVerification",
    "backward_prompt",
    "backward_scores",
    "backward_verify",
    "extract_x",
    "masks",
    "statement_prompt",
]

PROMPT_VERSION = "backward-1"

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")
_X_IS = re.compile(r"value\s+of\s+(?:the\s+unknown\s+variable\s+)?x\s+is\s*[:=]?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_ANY = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


@dataclass(frozen=True, slots=True)
class Mask:
    """One inverse question: ``text`` with one number replaced by ``x``; ``value`` is that number."""

    text: str
    value: float


def _num(s: str) -> float | None:
    """The number ``s`` denotes, or None when it is not a finite float (a 400-digit answer would be inf,
    and two infs would then count as the same value)."""
    try:
        v = float(s.replace(",", "").rstrip("."))
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def masks(text: str, limit: int | None = None) -> list[Mask]:
    """One :class:`Mask` per number occurrence in ``text`` (in order, at most ``limit``)."""
    out = []
    for m in _NUMBER.finditer(text):
        v = _num(m.group(0))
        if v is None:
            continue
        out.append(Mask(text[: m.start()] + "x" + text[m.end():], v))
        if limit is not None and len(out) >= limit:
            break
    return out


def backward_prompt(inverse_question: str, answer: str) -> Prompt:
    return Prompt.user(
        "The question below contains an unknown variable x. The answer to the original question is "
        "given; work backwards to find x, and end with \"The value of x is N.\"\n\n"
        f"{inverse_question.strip()}\n"
        f"If we know the answer to the above question is {answer}, what is the value of unknown variable x?"
    )


def extract_x(text: str) -> float | None:
    """The recovered value: after "The value of x is", else the last number in ``text``."""
    m = list(_X_IS.finditer(text))
    if m:
        return _num(m[-1].group(1))
    nums = _ANY.findall(text)
    return _num(nums[-1]) if nums else None


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@dataclass(frozen=True, slots=True)
class BackwardConfig:
    """``m_b``: backward samples per (masked question, answer) (8 in FOBAR); ``max_masks``: numbers
    masked per question (None = all); ``temperature`` and ``max_tokens`` of backward chains."""

    m_b: int = 8
    max_masks: int | None = None
    temperature: float = 0.7
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.m_b < 1:
            raise ConfigError(f"m_b must be >= 1, got {self.m_b}")
        if self.max_masks is not None and self.max_masks < 1:
            raise ConfigError(f"max_masks must be >= 1 or None, got {self.max_masks}")
        if self.max_tokens < 1 or self.temperature < 0:
            raise ConfigError("max_tokens must be >= 1 and temperature >= 0")


@dataclass(frozen=True)
class BackwardResult:
    """Per distinct answer: ``recovered`` chains and ``trials`` drawn; ``ran`` is False when backward
    was skipped (at most one distinct answer)."""

    recovered: dict[str, int] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    ran: bool = False

    def share(self, answer: str) -> float:
        t = self.trials.get(answer, 0)
        return self.recovered.get(answer, 0) / t if t else math.nan


async def _count(lm: Meter, stage: str, items: Sequence[tuple[Mask, str, Prompt]], params: SamplingParams,
                 m_b: int, seed: int) -> tuple[int, int]:
    async def one(j: int, mask: Mask, prompt: Prompt) -> tuple[int, int]:
        p = params.replace(seed=seed + j * m_b) if params.temperature > 0 else params
        samples = await lm.sample(prompt, p, m_b, stage=stage)
        return sum(_same(extract_x(s.text), mask.value) for s in samples), len(samples)

    res = await asyncio.gather(*(one(j, m, p) for j, (m, _, p) in enumerate(items)))
    return sum(r for r, _ in res), sum(t for _, t in res)


async def backward_verify(
    query: Query, answers: Sequence[str], lm: Meter, config: BackwardConfig = BackwardConfig(), *,
    stage: str = "fobar", rewrite: bool = False, seed: int = 0,
) -> BackwardResult:
    """Backward-verify each distinct answer of ``answers`` (equivalents merged; the first spelling
    keys the result). Runs only with more than one distinct answer."""
    classes = group_answers(list(answers), query.answers)
    if len(classes) < 2:
        return BackwardResult()
    params = SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature, logprobs=False)
    base_masks = masks(query.question, config.max_masks)

    async def per_answer(k: int, answer: str) -> tuple[int, int]:
        items = [(m, answer, backward_prompt(m.text, answer)) for m in base_masks]
        if rewrite:
            ms = await _rewrite_masks(query, answer, lm, stage, config.max_masks)
            if ms:
                items = [(m, answer, statement_prompt(m.text)) for m in ms]
        return await _count(lm, stage, items, params, config.m_b, seed + 100_003 * k)

    res = await asyncio.gather(*(per_answer(k, c.answer) for k, c in enumerate(classes)))
    return BackwardResult({c.answer: r for c, (r, _) in zip(classes, res)},
                          {c.answer: t for c, (_, t) in zip(classes, res)}, True)


async def backward_scores(
    query: Query, candidates: Sequence[Candidate], lm: Meter, m_b: int = 8, *,
    config: BackwardConfig | None = None, stage: str = "fobar", rewrite: bool = False, seed: int = 0,
) -> list[float]:
    """Per candidate: share of backward chains that recover the masked number given its answer.

    1.0 for every answered candidate when there is at most one distinct answer (no calls); 0.0 for
    candidates without an answer; NaN when the question has no number to mask.
    """
    cfg = config or BackwardConfig(m_b=m_b)
    classes = group_answers([c.answer for c in candidates], query.answers)
    out = [0.0] * len(candidates)
    result = await backward_verify(query, [c.answer for c in classes], lm, cfg, stage=stage,
                                   rewrite=rewrite, seed=seed)
    for c in classes:
        v = result.share(c.answer) if result.ran else 1.0
        for i in c.members:
            out[i] = v
    return out


def statement_prompt(masked_statement: str) -> Prompt:
    return Prompt.user(
        "The statement below contains an unknown variable x. Work out x, and end with "
        f"\"The value of x is N.\"\n\n{masked_statement.strip()}\nWhat is the value of unknown variable x?"
    )


def _rewrite_prompt(question: str, answer: str) -> Prompt:
    return Prompt.user(
        f"Question: {question.strip()}\nAnswer: {answer}\n\n"
        "Rewrite the question and its answer as one declarative statement that keeps every number "
        "of the question and states the answer. Reply with the statement only."
    )


async def _rewrite_masks(query: Query, answer: str, lm: Meter, stage: str, limit: int | None) -> list[Mask]:
    """Self-verification: rewrite to a statement, then mask the question's numbers inside it."""
    params = SamplingParams(max_tokens=256, temperature=0.0, logprobs=False)
    (s,) = await lm.sample(_rewrite_prompt(query.question, answer), params, 1, stage=stage)
    wanted = [m.value for m in masks(query.question)]
    out = []
    for m in masks(s.text):
        if any(_same(m.value, w) for w in wanted) and not _same(_num(answer) or math.nan, m.value):
            out.append(m)
            if limit is not None and len(out) >= limit:
                break
    return out


class Fobar:
    """FOBAR backward verification (Jiang et al., arXiv 2308.07758); text only; stage ``fobar``.

    Cost: ``#distinct answers × #numbers in the question`` calls of ``m_b`` samples, only when
    more than one distinct answer exists.
    """

    name = "fobar"
    needs_model = True
    requires: frozenset[str] = frozenset()
    rewrite = False

    def __init__(self, config: BackwardConfig | None = None, **options: object) -> None:
        self.config = config or BackwardConfig(**options)  # type: ignore[arg-type]

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        from thinktwice.signals.consistency import query_seed

        return await backward_scores(query, candidates, lm, config=self.config, stage=self.name,
                                     rewrite=self.rewrite, seed=query_seed(query, self.name) % 2**31)


class SelfVerification(Fobar):
    """Self-verification (Weng et al., arXiv 2212.09561): FOBAR on a model-rewritten declarative
    statement; one extra rewrite call per distinct answer; stage ``self-verification``."""

    name = "self-verification"
    rewrite = True
