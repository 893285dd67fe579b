"""Prompt templates and seeded few-shot selection shared by the built-in tasks.

Few-shot prompts are chat conversations: each exemplar is a user turn (the templated question)
followed by an assistant turn (its worked solution), then the real question as the last user turn.
The exemplars are drawn once per task instance from the train split with ``random.Random(seed)``,
so the same seed always gives the same prompt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from thinktwice.errors import ConfigError
from thinktwice.types import Message, Problem, Prompt

__all__ = [
    "CODE_TEMPLATE",
    "GSM8K_TEMPLATE",
    "MATH_TEMPLATE",
    "chat_prompt",
    "gsm8k_solution",
    "select_shots",
    "shots_for",
]

GSM8K_TEMPLATE = (
    "Solve the following math word problem. Think step by step, then finish with a line of the "
    "form \"The answer is N.\" where N is the final number.\n\nQuestion: {question}"
)

MATH_TEMPLATE = (
    "Solve the following math problem. Reason step by step, and put your final answer within "
    "\\boxed{{}}.\n\nProblem: {question}"
)

CODE_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function (signature, "
    "imports it needs and body) in a single ```python code block.\n\n```python\n{question}```"
)


def select_shots(pool: Sequence[Problem], shots: int, seed: int, spare: int = 1) -> list[Problem]:
    """``shots`` problems (plus up to ``spare`` reserves) drawn from ``pool`` with
    ``random.Random(seed)``: deterministic. The reserves replace an exemplar that happens to be the
    question being asked (see :func:`shots_for`)."""
    if shots < 0:
        raise ConfigError(f"shots must be >= 0, got {shots}")
    if shots == 0:
        return []
    if shots > len(pool):
        raise ConfigError(f"asked for {shots} few-shot examples but the train split has {len(pool)}")
    return random.Random(seed).sample(list(pool), min(shots + spare, len(pool)))


def shots_for(exemplars: Sequence[Problem], shots: int, question: str) -> list[Problem]:
    """The first ``shots`` exemplars whose question is not ``question`` (no answer leakage)."""
    return [e for e in exemplars if e.question != question][:shots]


def chat_prompt(
    question: str,
    template: str,
    exemplars: Sequence[Problem] = (),
    solution: Callable[[Problem], str] = lambda p: p.meta.get("solution", p.gold or ""),
    system: str | None = None,
) -> Prompt:
    """A chat prompt: optional system turn, exemplar (user, assistant) pairs, then the question."""
    msgs: list[Message] = [Message("system", system)] if system else []
    for ex in exemplars:
        msgs.append(Message("user", template.format(question=ex.question)))
        msgs.append(Message("assistant", solution(ex)))
    msgs.append(Message("user", template.format(question=question)))
    return Prompt(messages=tuple(msgs))


def gsm8k_solution(p: Problem) -> str:
    """A GSM8K reference solution in our answer format: calculator annotations removed and the
    final ``#### N`` line rewritten as ``The answer is N.``."""
    text = str(p.meta.get("solution", ""))
    body = re.sub(r"<<[^>]*>>", "", text)
    body = body.split("####")[0].rstrip()
    return f"{body}\nThe answer is {p.gold}."
