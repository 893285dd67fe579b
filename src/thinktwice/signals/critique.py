"""Self-critique: the model checks a solution step by step and ends with a verdict.

After *Critique Ability of Large Language Models* (Luo et al., arXiv 2310.04815, METHODS §4.8 and
§8.1): one extra call per distinct candidate text (stage ``self-critique``), prompt ≈ P + L, at
most ``max_tokens`` generated. The reply ends with ``Verdict: correct`` or ``Verdict: incorrect``.
Score = P(correct) read from the top logprobs at the verdict word when the backend returns them
(``correct`` against ``incorrect`` spellings, renormalised), else 1/0 from the parsed text, NaN
when no verdict can be found. Intrinsic self-critique is often no better than chance on reasoning
(Huang et al., arXiv 2310.01798; METHODS §7.2): measure it before trusting it.
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

__all__ = [
    "PROMPT_VERSION",
    "CritiqueConfig",
    "SelfCritique",
    "critique_prompt",
    "parse_verdict",
    "verdict_probability",
]

PROMPT_VERSION = "self-critique-1"

_VERDICT = re.compile(
    r"verdict\s*[:\-]?\s*[*_\"']*\s*(?:the\s+solution\s+is\s+)?(incorrect|not\s+correct|wrong|correct|right)\b",
    re.IGNORECASE,
)
_PLAIN = re.compile(r"\b(?:solution|answer)\s+is\s+[*_\"']*(incorrect|not\s+correct|wrong|correct|right)\b",
                    re.IGNORECASE)
_POSITIVE = ("correct", "right")


def critique_prompt(question: str, response: str) -> Prompt:
    return Prompt.user(
        f"Question: {question.strip()}\n\nProposed solution:\n{response.strip()}\n\n"
        "Review the proposed solution step by step. For each step, check the reasoning and the "
        "arithmetic. Then end your reply with exactly one line: \"Verdict: correct\" if the final "
        "answer is right, or \"Verdict: incorrect\" if it is not."
    )


def parse_verdict(text: str) -> bool | None:
    """True for a final 'Verdict: correct', False for 'incorrect'/'wrong', None when absent.

    Without a verdict line, a closing "the solution/answer is (in)correct" is read instead.
    """
    matches = list(_VERDICT.finditer(text)) or list(_PLAIN.finditer(text))
    if not matches:
        return None
    word = matches[-1].group(1).lower()
    return word in _POSITIVE


def _kind(token: str) -> str | None:
    """'+' for a spelling that begins "correct"/"right", '-' for "incorrect"/"wrong"/"not", else None."""
    t = token.strip().strip("*_\"'").lower()
    if len(t) < 2:
        return None
    if "incorrect".startswith(t) or t.startswith("incorrect") or t in ("wrong", "not", "false"):
        return "-"
    if "correct".startswith(t) or t.startswith("correct") or t in ("right", "true"):
        return "+"
    return None


def verdict_probability(sample: Sample) -> float:
    """P(correct) at the last verdict word from top logprobs; else 1/0 from text; NaN if no verdict."""
    verdict = parse_verdict(sample.text)
    if verdict is None:
        return math.nan
    if sample.tokens:
        m = (list(_VERDICT.finditer(sample.text)) or list(_PLAIN.finditer(sample.text)))[-1]
        start = m.start(1)
        pos = 0
        for stat in sample.tokens:
            end = pos + len(stat.token)
            if end > start:  # the token that contains the verdict word's first character
                plus = minus = 0.0
                for tok, lp in stat.top or ((stat.token, stat.logprob),):
                    k = _kind(tok)
                    if k == "+":
                        plus += math.exp(lp)
                    elif k == "-":
                        minus += math.exp(lp)
                if plus + minus > 0 and stat.top:
                    return plus / (plus + minus)
                break
            pos = end
    return 1.0 if verdict else 0.0


@dataclass(frozen=True, slots=True)
class CritiqueConfig:
    """``max_tokens`` of the critique; ``temperature`` (0 = greedy); ``top_logprobs`` asked for the
    verdict probability (capped by the backend; 0 = read the verdict from text only)."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_logprobs: int = 5

    def __post_init__(self) -> None:
        if self.max_tokens < 4:
            raise ConfigError(f"max_tokens must be >= 4 to leave room for the verdict, got {self.max_tokens}")
        if self.top_logprobs < 0:
            raise ConfigError(f"top_logprobs must be >= 0, got {self.top_logprobs}")


class SelfCritique:
    """Step-by-step self-critique ending in a verdict (Luo et al., arXiv 2310.04815); text only.

    Cost: one call per distinct candidate text, at most ``max_tokens`` generated.
    """

    name = "self-critique"
    needs_model = True
    requires: frozenset[str] = frozenset()

    def __init__(self, config: CritiqueConfig | None = None, **options: object) -> None:
        self.config = config or CritiqueConfig(**options)  # type: ignore[arg-type]

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        caps = lm.capabilities
        k = min(self.config.top_logprobs, caps.top_logprobs) if caps.logprobs else 0
        params = SamplingParams(max_tokens=self.config.max_tokens, temperature=self.config.temperature,
                                logprobs=k > 0, top_logprobs=k)
        texts = [c.sample.text for c in candidates]
        unique = list(dict.fromkeys(texts))

        async def one(t: str) -> float:
            (s,) = await lm.sample(critique_prompt(query.question, t), params, 1, stage=self.name)
            return verdict_probability(s)

        values = dict(zip(unique, await asyncio.gather(*(one(t) for t in unique))))
        return [values[t] for t in texts]
