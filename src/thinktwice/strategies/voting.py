"""Voting over answer equivalence classes (so that ``1/2`` and ``0.5`` do not split a vote).

Ties are broken deterministically: among tied classes the one whose first member appears
earliest in the candidate list wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from thinktwice.tasks.base import AnswerFormat
from thinktwice.types import Candidate

__all__ = ["AnswerClass", "group_answers", "Vote", "vote"]


@dataclass(frozen=True, slots=True)
class AnswerClass:
    """Candidates whose answers are equivalent; ``answer`` is the first member's answer."""

    answer: str
    members: tuple[int, ...]


def group_answers(answers: Sequence[str | None], fmt: AnswerFormat) -> list[AnswerClass]:
    """Equivalence classes of the non-None answers, in order of first appearance.

    Answers are first grouped by ``fmt.canonical``; distinct canonical keys are then merged when
    ``fmt.equivalent`` says so (union-find over keys, as RPC's evaluator does).
    """
    keys: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        k = fmt.canonical(a)
        if k not in keys:
            keys[k] = []
            first[k] = a
        keys[k].append(i)
    names = list(keys)
    parent = list(range(len(names)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if find(i) != find(j) and fmt.equivalent(first[names[i]], first[names[j]]):
                parent[find(j)] = find(i)
    merged: dict[int, list[int]] = {}
    for idx, name in enumerate(names):
        merged.setdefault(find(idx), []).extend(keys[name])
    classes = [AnswerClass(answers[min(m)] or "", tuple(sorted(m))) for m in merged.values()]
    classes.sort(key=lambda c: c.members[0])
    return classes


@dataclass(frozen=True, slots=True)
class Vote:
    """Result of a (weighted) vote: winning answer, its share of the total weight, all tallies."""

    answer: str | None
    share: float | None
    tallies: dict[str, float]
    winner: AnswerClass | None
    classes: tuple[AnswerClass, ...]

    @property
    def representative(self) -> int | None:
        """Index of the first candidate of the winning class."""
        return self.winner.members[0] if self.winner else None


def vote(
    candidates: Sequence[Candidate],
    fmt: AnswerFormat,
    weights: Sequence[float] | None = None,
) -> Vote:
    """Sum ``weights`` (default 1 each) per answer class; candidates without an answer cast no vote.

    Negative weights are an error: shift or exponentiate scores before voting.
    """
    if weights is not None:
        if len(weights) != len(candidates):
            raise ValueError("weights and candidates differ in length")
        if any(w < 0 for w in weights):
            raise ValueError("vote weights must be non-negative")
    classes = group_answers([c.answer for c in candidates], fmt)
    if not classes:
        return Vote(None, None, {}, None, ())
    w = list(weights) if weights is not None else [1.0] * len(candidates)
    tallies = [(sum(w[i] for i in c.members), c) for c in classes]
    total = sum(t for t, _ in tallies)
    best_t, best = tallies[0]
    for t, c in tallies[1:]:
        if t > best_t:  # strict: earlier class wins ties
            best_t, best = t, c
    share = best_t / total if total > 0 else 1.0 / len(classes)
    return Vote(best.answer, share, {c.answer: t for t, c in tallies}, best, tuple(classes))
