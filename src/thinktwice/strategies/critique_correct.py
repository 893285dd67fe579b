"""Closed-loop critique: solve, then critique-and-correct for k rounds (RealCritic, arXiv 2501.14492).

The critic gets the problem and a solution and writes (i) a step-by-step critique that stops at
the first wrong step, (ii) a conclusion "The solution is Correct/Incorrect" with "The first error
step number: k" (-1 when correct), (iii) a corrected solution ending in the final answer (METHODS
§8.2). A critique is judged by the answer its correction leads to. Later rounds continue the same
conversation and ask the critic to reconsider without copying its previous answer (iterative
critique). Calls: 1 + rounds; prompts grow with the conversation. When the gold answer is known,
correctness per round is written to the trace for flip analysis only; it never steers the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.tasks.base import AnswerFormat
from thinktwice.types import Candidate, Message, Prompt

__all__ = ["CritiqueCorrect", "PROMPT_VERSION", "critic_prompt", "parse_conclusion"]

PROMPT_VERSION = "critique-correct-1"

_CONCLUSION = re.compile(r"the\s+solution\s+is\s+\**\s*(correct|incorrect|wrong|right)\b", re.I)
_CORRECTED = re.compile(r"corrected\s+solution\s*:?", re.I)
_STEP_LINE = re.compile(r"^.*first\s+error\s+step.*$", re.I | re.M)
_REVISIT = ("Review your critique and correction once more. Check each step again; if you find a mistake in "
            "your own critique or correction, fix it. Do not simply repeat your previous answer. Use the same "
            "format: critique, conclusion, first error step number, and corrected solution with the final answer.")


def critic_prompt(question: str, solution: str) -> str:
    return (
        f"[Problem]\n{question.strip()}\n\n[Solution]\n{solution.strip()}\n\n"
        "Critique the solution step by step and stop at the first wrong step. Then write:\n"
        "Conclusion: \"The solution is Correct\" or \"The solution is Incorrect\".\n"
        "\"The first error step number: k\" (k = -1 if the solution is correct).\n"
        "Corrected solution: a complete solution that ends with the line \"The answer is N\"."
    )


def parse_conclusion(text: str) -> bool | None:
    """True when the critic concludes the solution is correct, False for incorrect, None if unclear."""
    m = list(_CONCLUSION.finditer(text))
    if not m:
        return None
    return m[-1].group(1).lower() in ("correct", "right")


@dataclass(frozen=True)
class CritiqueCorrect(BaseStrategy):
    """Greedy solution, then ``rounds`` of critique-and-correct by the same (or any) model."""

    name: ClassVar[str] = "critique-correct"
    rounds: int = 1
    max_tokens: int | None = None
    critic_max_tokens: int = 768

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")

    @staticmethod
    def corrected_answer(fmt: AnswerFormat, text: str, previous: str | None) -> str | None:
        """The answer the critique leads to: the corrected solution's, else the old one when the critic
        judged it correct, else whatever answer the reply states (None when it states none)."""
        cut = list(_CORRECTED.finditer(text))
        if cut:
            found = fmt.extract(text[cut[-1].end():])
            if found is not None:
                return found
        if parse_conclusion(text) is True:
            return previous
        return None if cut else fmt.extract(_STEP_LINE.sub("", text))

    async def decide(self, ctx: RunContext) -> Verdict:
        base = ctx.query.params.replace(temperature=0.0)
        if self.max_tokens is not None:
            base = base.replace(max_tokens=self.max_tokens)
        first = (await ctx.sample(1, base, stage="solve"))[0]
        cands: list[Candidate] = [first]
        answer = first.answer
        self._note_round(ctx, 0, answer, None)
        messages = [Message("user", critic_prompt(ctx.query.question, first.sample.text))]
        params = base.replace(max_tokens=self.critic_max_tokens, stop=())
        stopped = "done"
        for r in range(1, self.rounds + 1):
            try:
                got = await ctx.sample(1, params, prompt=Prompt(messages=tuple(messages)), stage="critique")
            except BudgetExhausted:
                stopped = "budget"
                break
            text = got[0].sample.text
            answer = self.corrected_answer(ctx.query.answers, text, answer)
            cands.append(Candidate(got[0].sample, answer, stage=f"critique-{r}"))
            self._note_round(ctx, r, answer, parse_conclusion(text))
            messages += [Message("assistant", text), Message("user", _REVISIT)]
        return Verdict(answer, None, cands, len(cands) - 1, stopped_because=stopped,
                       votes={answer: 1.0} if answer is not None else {})

    @staticmethod
    def _note_round(ctx: RunContext, r: int, answer: str | None, judged_correct: bool | None) -> None:
        gold = ctx.query.problem.gold
        correct = None
        if gold is not None:
            correct = answer is not None and ctx.query.answers.equivalent(answer, gold)
        ctx.note("round", round=r, answer=answer, judged_correct=judged_correct, correct=correct)
