"""B-STaR monitoring of a self-training iteration: exploration, exploitation and the balance score.

Zeng et al., arXiv 2412.17256 (METHODS.md §10.4). For each query the iteration samples ``k``
responses; a reward picks the *selected* ones (here the grader's final-answer check, optionally
with a reasoning check), identical reasoning paths are merged, and

- exploration = pass@k (share of queries with any correct sample) and the mean number of distinct
  correct answers / reasoning paths per query;
- exploitation = share of selected samples that are truly correct (for arithmetic: right answer
  AND every equation right, see :func:`arith_steps_valid`);
- balance score per query ``bs_i = min(n'_i / n*, 1) * (n'_i / n_i)`` with ``n'_i`` the distinct
  truly-correct selected samples and ``n_i`` the distinct selected ones (0 when none is selected);
  ``n* = 8`` as in the released B-STaR code.

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
    """``min(n'/n*, 1) * (n'/n)`` for one query (0 when nothing is selected)."""
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
    balance: float
    threshold: float
    temperature: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(groups: Sequence[Sequence[Scored]], *, threshold: float = 1.0, n_star: int = N_STAR,
            temperature: float | None = None, canonical: Any = None) -> BStarStats:
    """B-STaR measures over ``groups`` (one list of samples per query); a sample is *selected*
    when its :meth:`Scored.score` is >= ``threshold`` (1.0: right final answer; 1.5: right answer and
    valid steps). ``canonical`` maps an answer to its comparison form (default: stripped text)."""
    canon = canonical or (lambda a: str(a).strip())
    q = len(groups)
    if q == 0:
        raise ConfigError("no queries to measure")
    n_samples = sum(len(g) for g in groups)
    passed = acc = ans = paths = 0.0
    sel = sel_distinct = sel_true = 0
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
                chosen.setdefault(path_key(s.text), s)
        n_i = len(chosen)
        n_ok = sum(s.correct for s in chosen.values())
        sel_distinct += n_i
        sel_true += n_ok
        bs += balance_score(n_ok, n_i, n_star)
    return BStarStats(
        queries=q, samples=n_samples, pass_at_k=passed / q, sample_accuracy=acc / q,
        distinct_correct_answers=ans / q, distinct_correct_paths=paths / q, selected=sel,
        selected_distinct=sel_distinct, exploitation=(sel_true / sel_distinct) if sel_distinct else 0.0,
        balance=bs / q, threshold=threshold, temperature=temperature,
    )
