"""Self-Refine (Madaan et al., arXiv 2303.17651; METHODS §7.1) and a confidence-gated variant.

``y0`` is sampled; each round asks the same model for feedback on the latest answer (the full
history stays in the conversation) and stops when the feedback says the answer is right;
otherwise the model revises, for at most ``max_rounds`` rounds (``1 + 2R`` calls). Huang et al.
(arXiv 2310.01798) show that without an oracle this often turns right answers wrong, so every
round's answer is graded against the gold answer *when the query has one*, purely for reporting:
the trace's ``round`` steps carry ``correct`` and the ``flips`` step counts right->wrong and
wrong->right changes per round (METHODS §1.4). Gold is never used to stop.

``confidence-refine`` refines only when a signal on the first answer is below a threshold and
stops as soon as a revision's confidence reaches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from thinktwice.errors import ConfigError, ContextLengthExceeded
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.gate import PROBABILITY_SIGNALS, default_threshold
from thinktwice.strategies.sampling import follow_up, sampling_params
from thinktwice.strategies.scoring import SignalSpec, check_signal, resolve_signal, score_candidates
from thinktwice.types import Candidate, Message, Prompt

__all__ = ["FEEDBACK_REQUEST", "REVISE_REQUEST", "ConfidenceRefine", "SelfRefine", "feedback_says_correct"]

FEEDBACK_REQUEST = (
    "Review your previous answer step by step and find any problems with it. If the answer is "
    "correct, end your review with exactly: \"The answer is correct.\" Otherwise explain the mistakes."
)
REVISE_REQUEST = (
    "Based on the problems you found, improve your answer. Write the full corrected solution and "
    "end with the final answer in the required format."
)
_CORRECT = re.compile(r"\b(the answer is correct|no (problems|issues|mistakes|errors) (found|were found))\b", re.IGNORECASE)
_NEGATED = re.compile(r"\b(not|isn't|is not)\s+correct\b", re.IGNORECASE)


def feedback_says_correct(text: str) -> bool:
    """True when the feedback declares the answer right ("The answer is correct.")."""
    return bool(_CORRECT.search(text)) and not _NEGATED.search(text)


@dataclass(frozen=True)
class SelfRefine(BaseStrategy):
    """Feedback, then revise, up to ``max_rounds`` rounds; stops when the feedback approves.

    ``stopped_because``: "converged" (feedback approved), "done" (rounds used up), "budget".
    """

    name: ClassVar[str] = "self-refine"
    max_rounds: int = 4
    temperature: float = 0.7
    feedback_temperature: float = 0.0
    max_tokens: int | None = None
    feedback_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_rounds < 0:
            raise ConfigError(f"max_rounds must be >= 0, got {self.max_rounds}")

    # -- hooks for the confidence-gated variant ---------------------------------------------
    async def _start(self, ctx: RunContext, first: Candidate) -> tuple[Candidate, bool]:
        return first, True

    async def _after_revision(self, ctx: RunContext, cand: Candidate) -> tuple[Candidate, bool]:
        return cand, False

    def _grade(self, ctx: RunContext, answer: str | None) -> bool | None:
        gold = ctx.query.problem.gold
        if gold is None:
            return None
        return answer is not None and ctx.query.answers.equivalent(answer, gold)

    async def decide(self, ctx: RunContext) -> Verdict:
        params = sampling_params(ctx, self.temperature, 1.0, self.max_tokens)
        fb_params = sampling_params(ctx, self.feedback_temperature, 1.0, self.feedback_max_tokens)
        [first] = await ctx.sample(1, params)
        current, go_on = await self._start(ctx, first)
        cands = [current]
        history: Prompt = ctx.query.prompt
        correct = [self._grade(ctx, current.answer)]
        ctx.note("round", round=0, answer=current.answer, correct=correct[0])
        stopped = "confident" if not go_on else "done"
        rounds = 0
        while go_on and rounds < self.max_rounds:
            history = follow_up(history, Message("assistant", current.sample.text), Message("user", FEEDBACK_REQUEST))
            try:
                [fb] = await ctx.sample(1, fb_params, prompt=history, stage="feedback")
            except (BudgetExhausted, ContextLengthExceeded) as e:
                stopped = "budget"
                ctx.note("stop", reason="context full" if isinstance(e, ContextLengthExceeded) else "budget")
                break
            approved = feedback_says_correct(fb.sample.text)
            ctx.note("feedback", round=rounds + 1, approved=approved, text=fb.sample.text[:300])
            if approved:
                stopped = "converged"
                break
            history = follow_up(history, Message("assistant", fb.sample.text), Message("user", REVISE_REQUEST))
            try:
                [rev] = await ctx.sample(1, params, prompt=history, stage="refine")
            except (BudgetExhausted, ContextLengthExceeded) as e:
                stopped = "budget"
                ctx.note("stop", reason="context full" if isinstance(e, ContextLengthExceeded) else "budget")
                break
            rounds += 1
            rev = Candidate(rev.sample, rev.answer, rev.scores, stage=f"refine-{rounds}")
            current, confident = await self._after_revision(ctx, rev)
            cands.append(current)
            correct.append(self._grade(ctx, current.answer))
            ctx.note("round", round=rounds, answer=current.answer, correct=correct[-1],
                     changed=current.answer != cands[-2].answer)
            if confident:
                stopped = "confident"
                break
        self._note_flips(ctx, correct)
        return Verdict(current.answer, current.scores.get("confidence"), cands, len(cands) - 1,
                       stopped_because=stopped,
                       votes={current.answer: 1.0} if current.answer is not None else {})

    @staticmethod
    def _note_flips(ctx: RunContext, correct: list[bool | None]) -> None:
        if any(c is None for c in correct):
            return
        per_round = [
            {"round": r, "right_to_wrong": int(correct[r - 1] and not correct[r]),
             "wrong_to_right": int(not correct[r - 1] and correct[r])}
            for r in range(1, len(correct))
        ]
        ctx.note("flips", initial_correct=correct[0], final_correct=correct[-1], per_round=per_round,
                 right_to_wrong=sum(p["right_to_wrong"] for p in per_round),
                 wrong_to_right=sum(p["wrong_to_right"] for p in per_round))


@dataclass(frozen=True)
class ConfidenceRefine(SelfRefine):
    """Refine only a first answer whose ``signal`` is below ``threshold``; stop once a revision reaches it."""

    name: ClassVar[str] = "confidence-refine"
    signal: SignalSpec = "path-prob"
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        default_threshold(self.signal, self.threshold)

    async def _score(self, ctx: RunContext, cand: Candidate) -> tuple[Candidate, bool]:
        sig = resolve_signal(self.signal)
        check_signal(sig, ctx)
        [scored] = await score_candidates(sig, ctx, [cand])
        s = scored.scores[sig.name]
        if sig.name in PROBABILITY_SIGNALS:
            scored = scored.with_score("confidence", s)
        return scored, s >= default_threshold(self.signal, self.threshold)

    async def _start(self, ctx: RunContext, first: Candidate) -> tuple[Candidate, bool]:
        scored, confident = await self._score(ctx, first)
        ctx.note("gate", confident=confident)
        return scored, not confident

    async def _after_revision(self, ctx: RunContext, cand: Candidate) -> tuple[Candidate, bool]:
        return await self._score(ctx, cand)
