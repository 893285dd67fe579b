"""B-STaR monitoring of a self-training iteration: exploration, exploitation and the balance score.

Zeng et al., arXiv 2412.17256 (METHODS.md §10.4). For each query the iteration samples ``k``
responses; a reward picks the *selected* ones (here the grader's final-answer check, optionally
with a reasoning check), identical selected texts are merged, and

- exploration = pass@k (share of queries with any correct sample) and the mean number of distinct
  correct answers / reasoning paths per query;
- exploitation = share of the distinct selected samples that are truly correct (for arithmetic:
  right answer AND every equation right, see :func:`arith_steps_valid`);
- balance score per query ``bs_i = min(n'_i / n*, 1) * (n'_i / n_i)``, as the released code
  (hkust-nlp/B-STaR, ``cal_modi_acc_soft``) computes it: ``n_i`` the distinct selected samples
  (identical texts merged), ``n'_i`` those whose FINAL ANSWER is right, ``n* = 8``, and the mean
  taken over the queries with at least one selected sample. (The released code also caps the
  selections per query to reach a target set size and adds the reference solution; neither is done
  here.)

Pure Python: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from thinktwice.errors import ConfigError

__all__ = ["N_STAR", "BStarStats", "Scored", "arith_path", "arith_steps_valid", "balance_score", "measure",
           "path_key"]

N_STAR = 8
_EQ = re.compile(r"(-?\d+)\s*([+\-*x×/])\s*(-?\d+)\s*=\s*(-?\d+)")


def arith_path(text: str) -> tuple[str, ...]:
    """The sequence of equations in ``text`` (normalised ``a+b=c``), the reasoning path of an arithmetic solution."""
    return tuple(f"{a}{'*' if op in 'x×' else op}{b}={c}" for a, op, b, c in _EQ.findall(text))


def path_key(text: str) -> str:
    """De-duplication key of a reasoning path: the equation sequence when there is one, else the text
    with whitespace normalised."""
    eqs = arith_path(text)
    return " ".join(eqs) if eqs else " ".join(text.split())


def arith_steps_valid(text: str) -> bool:
    """True when the text has at least one equation, every equation is arithmetically right, and the
    final ``#### N`` (when present) equals the last equation's result. A step check, not a proof: an
    arithmetically right chain can still ignore an event of the story."""
    eqs = _EQ.findall(text)
    if not eqs:
        return False
    for a, op, b, c in eqs:
        x, y, z = int(a), int(b), int(c)
        r = {"+": x + y, "-": x - y, "*": x * y, "x": x * y, "×": x * y}.get(op)
        if op == "/":
            r = x // y if y and x % y == 0 else None
        if r != z:
            return False
    m = re.search(r"####\s*(-?\d+)", text)
    return m is None or int(m.group(1)) == int(eqs[-1][3])


@dataclass(frozen=True, slots=True)
class Scored:
    """One sample of a query as the monitor sees it."""

    text: str
    answer: str | None
    answer_correct: bool
    steps_valid: bool

    @property
    def correct(self) -> bool:
        """Truly correct: right answer reached by valid steps."""
        return self.answer_correct and self.steps_valid

    def score(self) -> float:
        """Reward in the style of B-STaR's ``ORM + min-step PRM / 2``: 1 for the right answer, +0.5 for valid steps."""
        return float(self.answer_correct) + 0.5 * float(self.steps_valid)


def balance_score(n_correct: int, n_selected: int, n_star: int = N_STAR) -> float:
    """``min(n'/n*, 1) * (n'/n)`` for one query (0 when nothing is selected; :func:`measure` leaves
    such queries out of the mean)."""
    if n_star < 1:
        raise ConfigError("n_star must be >= 1")
    if n_selected <= 0:
        return 0.0
    return min(n_correct / n_star, 1.0) * (n_correct / n_selected)


@dataclass(frozen=True)
class BStarStats:
    """Per-iteration monitor values (means over queries unless named otherwise)."""

    queries: int
    samples: int
    pass_at_k: float
    sample_accuracy: float
    distinct_correct_answers: float
    distinct_correct_paths: float
    selected: int
    selected_distinct: int
    exploitation: float
    balance: float  # mean over the ``balance_queries`` queries with a selected sample
    threshold: float
    temperature: float | None = None
    balance_queries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(groups: Sequence[Sequence[Scored]], *, threshold: float = 1.0, n_star: int = N_STAR,
            temperature: float | None = None, canonical: Any = None) -> BStarStats:
    """B-STaR measures over ``groups`` (one list of samples per query); a sample is *selected*
    when its :meth:`Scored.score` is >= ``threshold`` (1.0: right final answer; 1.5: right answer and
    valid steps) and identical selected texts count once. ``canonical`` maps an answer to its
    comparison form (default: stripped text). ``balance`` is 0.0 when no query has a selected sample."""
    canon = canonical or (lambda a: str(a).strip())
    q = len(groups)
    if q == 0:
        raise ConfigError("no queries to measure")
    n_samples = sum(len(g) for g in groups)
    passed = acc = ans = paths = 0.0
    sel = sel_distinct = sel_true = bs_queries = 0
    bs = 0.0
    for g in groups:
        passed += any(s.answer_correct for s in g)
        acc += sum(s.answer_correct for s in g) / max(1, len(g))
        ans += len({canon(s.answer) for s in g if s.answer_correct and s.answer is not None})
        paths += len({path_key(s.text) for s in g if s.correct})
        chosen: dict[str, Scored] = {}
        for s in g:
            if s.score() >= threshold:
                sel += 1
                chosen.setdefault(s.text, s)  # the released code merges identical outputs only
        n_i = len(chosen)
        sel_distinct += n_i
        sel_true += sum(s.correct for s in chosen.values())
        if n_i:
            bs_queries += 1
            bs += balance_score(sum(s.answer_correct for s in chosen.values()), n_i, n_star)
    return BStarStats(
        queries=q, samples=n_samples, pass_at_k=passed / q, sample_accuracy=acc / q,
        distinct_correct_answers=ans / q, distinct_correct_paths=paths / q, selected=sel,
        selected_distinct=sel_distinct, exploitation=(sel_true / sel_distinct) if sel_distinct else 0.0,
        balance=bs / bs_queries if bs_queries else 0.0, threshold=threshold, temperature=temperature,
        balance_queries=bs_queries,
    )
