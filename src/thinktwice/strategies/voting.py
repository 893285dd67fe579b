"""Voting over answer equivalence classes (so that ``1/2`` and ``0.5`` do not split a vote).

Weighted tallies are compared exactly (every float weight is a dyadic rational; their sums are
kept as integers), so the winner does not depend on the order in which floats were added, and
ties are real ties. Ties go to the class whose first voting member appears earliest in the
candidate list.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from thinktwice.tasks.base import AnswerFormat
from thinktwice.types import Candidate

__all__ = ["AnswerClass", "group_answers", "Vote", "exact_units", "vote"]


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


def exact_units(weights: Sequence[float]) -> list[int]:
    """Non-negative finite floats as integers on one common grid (``w_i = units_i * 2**e``).

    Every float is an integer multiple of its last bit, so scaling all of them to the smallest
    last bit among them is exact; sums and comparisons of the integers are then exact too.
    """
    parts = []
    for w in weights:
        if w == 0:
            parts.append((0, 0))
            continue
        m, e = math.frexp(w)
        parts.append((int(m * (1 << 53)), e - 53))
    low = min((e for m, e in parts if m), default=0)
    return [m << (e - low) if m else 0 for m, e in parts]


@dataclass(frozen=True, slots=True)
class Vote:
    """Result of a (weighted) vote: winning answer, its share of the total weight, all tallies.

    ``tallies`` are float sums for display; ``exact`` holds the same tallies as integers on one
    grid (class order), which decide the winner and :meth:`share_at_least`.
    """

    answer: str | None
    share: float | None
    tallies: dict[str, float]
    winner: AnswerClass | None
    classes: tuple[AnswerClass, ...]
    exact: tuple[int, ...] = field(default=(), repr=False)

    @property
    def representative(self) -> int | None:
        """Index of the first candidate of the winning class."""
        return self.winner.members[0] if self.winner else None

    def share_at_least(self, threshold: float) -> bool:
        """Whether the winner holds at least ``threshold`` of the total weight, decided exactly
        (False when there is no winner or the total weight is zero)."""
        total = sum(self.exact)
        if self.winner is None or total <= 0:
            return False
        best = self.exact[self.classes.index(self.winner)]
        num, den = float(threshold).as_integer_ratio()
        return best * den >= num * total


def vote(
    candidates: Sequence[Candidate],
    fmt: AnswerFormat,
    weights: Sequence[float] | None = None,
    *,
    voters: Collection[int] | None = None,
) -> Vote:
    """Sum ``weights`` (default 1 each) per answer class; candidates without an answer cast no vote.

    ``voters`` (candidate indices) restricts the vote to those candidates: the others form no
    class and break no tie. Negative or non-finite weights are an error: shift or exponentiate
    scores before voting.
    """
    if weights is not None:
        if len(weights) != len(candidates):
            raise ValueError("weights and candidates differ in length")
        if any(not (w >= 0 and math.isfinite(w)) for w in weights):
            raise ValueError("vote weights must be finite and non-negative")
    answers = [c.answer if voters is None or i in voters else None for i, c in enumerate(candidates)]
    classes = group_answers(answers, fmt)
    if not classes:
        return Vote(None, None, {}, None, ())
    w = list(weights) if weights is not None else [1.0] * len(candidates)
    units = exact_units(w) if weights is not None else [1] * len(candidates)
    exact = [sum(units[i] for i in c.members) for c in classes]
    best = 0
    for j in range(1, len(classes)):
        if exact[j] > exact[best]:  # strict: the earlier class wins ties
            best = j
    floats = [sum(w[i] for i in c.members) for c in classes]
    total = sum(floats)
    share = floats[best] / total if total > 0 else 1.0 / len(classes)
    return Vote(classes[best].answer, share, {c.answer: t for t, c in zip(floats, classes)}, classes[best],
                tuple(classes), tuple(exact))
