"""P(True): the model is shown a proposed answer and asked whether it is true (Kadavath et al., arXiv 2207.05221).

The prompt keeps the paper's option lines and trailing cue (METHODS §2.4)::

    Question: <question>
    Proposed Answer: <answer>
    Is the proposed answer:
     (A) True
     (B) False
    The proposed answer is:

Score = ``P(A) / (P(A) + P(B))`` read from the top logprobs at the decision position: the first
generated token that is not only ``"("`` or whitespace (a model that writes ``" ("`` then ``"B"``
decides at the second token; the alternatives of ``" ("`` say nothing about A vs B). Spellings are
summed (``" (A"``, ``"A"``, ``" A"``, ``"(A"``, ``"A)"`` and the words ``True``/``False``), case
sensitively, so the article ``" a"`` is not option A. When the backend reports no top logprobs,
``samples`` verdicts are drawn at temperature 1 and the score is the share of A among the parsed ones.

Cost per distinct prompt (identical prompts are asked once): with logprobs 1 call, at most 2
generated tokens; without, ``samples`` sequences of at most 4 tokens (one call where the backend
has native ``n``). ``p-true-context`` also lists up to 5 other samples as brainstormed ideas, so its
prompt grows with their length.
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
from thinktwice.types import Candidate, Prompt, Sample, SamplingParams

__all__ = ["PROMPT_VERSION", "PTrue", "PTrueConfig", "PTrueContext", "option_probability", "p_true_prompt"]

PROMPT_VERSION = "p-true-1"

_VERDICT = re.compile(r"^\s*\(?\s*(A|B|True|False)\b")
_OPTIONS = {"A": "A", "True": "A", "B": "B", "False": "B"}


def _option(token: str) -> str | None:
    """'A' or 'B' when ``token`` spells option (A)/True or (B)/False (case-sensitive), else None."""
    return _OPTIONS.get(token.strip().lstrip("(").strip().rstrip(").:").strip())


def _is_lead(token: str) -> bool:
    """True for a token that only opens the verdict ("(", " (", whitespace) without deciding it."""
    return not token.replace("(", "").strip()


def option_probability(sample: Sample, max_positions: int = 2) -> float:
    """``P(A)/(P(A)+P(B))`` at the decision position: the first of ``max_positions`` generated tokens
    that is not a lead-in ("(" or whitespace). Reads its top logprobs (the chosen token alone when
    there are none); falls back to the text's verdict (1 or 0); NaN when neither works."""
    stat = next((t for t in (sample.tokens or ())[:max_positions] if not _is_lead(t.token)), None)
    if stat is not None:
        pa = pb = 0.0
        for tok, lp in stat.top or ((stat.token, stat.logprob),):
            o = _option(tok)
            if o == "A":
                pa += math.exp(lp)
            elif o == "B":
                pb += math.exp(lp)
        if pa + pb > 0:
            return pa / (pa + pb)
    m = _VERDICT.match(sample.text)
    if m:
        return 1.0 if _option(m.group(1)) == "A" else 0.0
    return math.nan


@dataclass(frozen=True, slots=True)
class PTrueConfig:
    """Settings of P(True).

    ``show``: what stands as the proposed answer, the candidate's full ``"response"`` or its
    extracted ``"answer"``. ``top_logprobs``: alternatives requested (>= 2; capped by the backend).
    ``samples``: verdicts drawn per prompt when the backend has no logprobs. ``raw``: send the
    block as a plain completion prompt instead of one user message. ``ideas`` (p-true-context): how
    many other samples to list; ``ideas_show``: their ``"response"`` or ``"answer"``.
    """

    show: str = "response"
    top_logprobs: int = 5
    samples: int = 10
    raw: bool = False
    ideas: int = 5
    ideas_show: str = "response"

    def __post_init__(self) -> None:
        for f in ("show", "ideas_show"):
            if getattr(self, f) not in ("response", "answer"):
                raise ConfigError(f"{f} must be 'response' or 'answer', got {getattr(self, f)!r}")
        if self.top_logprobs < 2:
            raise ConfigError(f"top_logprobs must be >= 2 to compare (A) with (B), got {self.top_logprobs}")
        if self.samples < 1 or self.ideas < 0:
            raise ConfigError("samples must be >= 1 and ideas >= 0")


def _shown(c: Candidate, how: str) -> str:
    if how == "answer" and c.answer is not None:
        return c.answer
    return c.sample.text.strip()


def p_true_prompt(question: str, proposed: str, ideas: Sequence[str] = (), raw: bool = False) -> Prompt:
    """The Kadavath et al. P(True) prompt, optionally with brainstormed ideas before the answer."""
    lines = [f"Question: {question.strip()}"]
    if ideas:
        lines.append("Here are some brainstormed ideas:")
        lines.extend(i.strip() for i in ideas)
    lines += [f"Proposed Answer: {proposed}", "Is the proposed answer:", " (A) True", " (B) False",
              "The proposed answer is:"]
    text = "\n".join(lines)
    return Prompt(raw=text) if raw else Prompt.user(text)


class PTrue:
    """P(True) self-evaluation (Kadavath et al., arXiv 2207.05221); stage ``p-true``.

    Needs nothing from the backend; reads logprobs when it has them (>= 2 alternatives), else
    samples verdicts. See the module docstring for the cost.
    """

    name = "p-true"
    needs_model = True
    requires: frozenset[str] = frozenset()

    def __init__(self, config: PTrueConfig | None = None, **options: object) -> None:
        self.config = config or PTrueConfig(**options)  # type: ignore[arg-type]

    def _ideas(self, candidates: Sequence[Candidate], i: int) -> list[str]:
        return []

    async def _ask(self, prompt: Prompt, lm: Meter) -> float:
        caps = lm.capabilities
        if caps.logprobs and caps.top_logprobs >= 2:
            k = min(self.config.top_logprobs, caps.top_logprobs)
            params = SamplingParams(max_tokens=2, temperature=0.0, logprobs=True, top_logprobs=k)
            (s,) = await lm.sample(prompt, params, 1, stage=self.name)
            return option_probability(s)
        params = SamplingParams(max_tokens=4, temperature=1.0, logprobs=False)
        verdicts = await lm.sample(prompt, params, self.config.samples, stage=self.name)
        opts = [_option(m.group(1)) for s in verdicts if (m := _VERDICT.match(s.text))]
        a, b = opts.count("A"), opts.count("B")
        return a / (a + b) if a + b else math.nan

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        prompts = [
            p_true_prompt(query.question, _shown(c, self.config.show), self._ideas(candidates, i), self.config.raw)
            for i, c in enumerate(candidates)
        ]
        unique = list(dict.fromkeys(prompts))
        values = await asyncio.gather(*(self._ask(p, lm) for p in unique))
        by_prompt = dict(zip(unique, values))
        return [by_prompt[p] for p in prompts]


class PTrueContext(PTrue):
    """P(True) with up to ``ideas`` other samples of the question listed as brainstormed ideas
    (Kadavath et al., arXiv 2207.05221, §self-evaluation with samples); stage ``p-true-context``."""

    name = "p-true-context"

    def _ideas(self, candidates: Sequence[Candidate], i: int) -> list[str]:
        others = [c for j, c in enumerate(candidates) if j != i][: self.config.ideas]
        return [_shown(c, self.config.ideas_show) for c in others]
