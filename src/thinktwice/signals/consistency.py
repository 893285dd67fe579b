"""Agreement signals: score a candidate by how the other samples of the same question agree with it.

| name | paper | needs | cost |
|---|---|---|---|
| ``vote-share`` | self-consistency, arXiv 2203.11171 | answers of the N samples | none |
| ``rpc`` | RPC, Zhou et al., arXiv 2502.00511 | chosen-token logprobs | none |
| ``answer-entropy`` | METHODS §2 | answers of the N samples | none |
| ``usc-agreement`` | USC, Chen et al., arXiv 2311.17311 | sample texts | 1 call, prompt ≈ P + N·L |

Answers are grouped with the task's equivalence (``1/2`` and ``0.5`` vote together). A candidate
without an extractable answer scores 0 on vote-share and rpc (it is graded wrong anyway).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thinktwice.errors import ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.signals.confidence import candidate_arrays
from thinktwice.signals.token_stats import mean_logprob
from thinktwice.strategies.voting import AnswerClass, group_answers
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Prompt, SamplingParams

__all__ = [
    "RPC",
    "USC_PROMPT_VERSION",
    "AnswerEntropy",
    "RPCConfig",
    "USCAgreement",
    "USCConfig",
    "VoteShare",
    "WeibullMixture",
    "fit_weibull_mixture",
    "prune_paths",
    "query_seed",
    "rpc_scores",
]

log = logging.getLogger(__name__)


def _classes(query: Query, candidates: Sequence[Candidate]) -> list[AnswerClass]:
    return group_answers([c.answer for c in candidates], query.answers)


def query_seed(query: Query, salt: str = "") -> int:
    """A stable seed derived from the problem (not Python's salted ``hash``)."""
    h = hashlib.sha256(f"{salt}\x00{query.problem.id}\x00{query.question}".encode()).digest()
    return int.from_bytes(h[:8], "little")


class VoteShare:
    """Share of all N candidates whose answer is equivalent to this one's (0 without an answer).

    The denominator counts every candidate, answered or not. No model calls.
    """

    name = "vote-share"
    needs_model = False
    requires: frozenset[str] = frozenset()

    def score_sync(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        n = len(candidates)
        out = [0.0] * n
        for c in _classes(query, candidates):
            for i in c.members:
                out[i] = len(c.members) / n
        return out

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter | None = None) -> list[float]:
        return self.score_sync(query, candidates)


class AnswerEntropy:
    """One minus the normalised entropy of the answer distribution, ``1 - H(f)/log(#distinct)``.

    A question-level agreement score (every candidate of a question gets the same value): 1 when
    all answered candidates agree, 0 when every answer differs. NaN when nothing was answered.
    """

    name = "answer-entropy"
    needs_model = False
    requires: frozenset[str] = frozenset()

    def score_sync(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        sizes = np.array([len(c.members) for c in _classes(query, candidates)], dtype=np.float64)
        if sizes.size == 0:
            value = math.nan
        elif sizes.size == 1:
            value = 1.0
        else:
            f = sizes / sizes.sum()
            value = 1.0 - float(-(f * np.log(f)).sum() / math.log(sizes.size))
        return [value] * len(candidates)

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter | None = None) -> list[float]:
        return self.score_sync(query, candidates)


# --- RPC ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeibullMixture:
    """Two-component Weibull mixture ``w·W(k1, λ1) + (1-w)·W(k2, λ2)``."""

    w: float
    k1: float
    lam1: float
    k2: float
    lam2: float

    @staticmethod
    def _pdf(x: np.ndarray, k: float, lam: float) -> np.ndarray:
        z = x / lam
        return (k / lam) * z ** (k - 1) * np.exp(-(z**k))

    def densities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted component densities ``(w f1, (1-w) f2)`` at ``x``."""
        return self.w * self._pdf(x, self.k1, self.lam1), (1 - self.w) * self._pdf(x, self.k2, self.lam2)

    def means(self) -> tuple[float, float]:
        return self.lam1 * math.gamma(1 + 1 / self.k1), self.lam2 * math.gamma(1 + 1 / self.k2)


def _weighted_weibull_mle(
    x: np.ndarray, r: np.ndarray, k0: float = 1.0, lo: float = 0.01, hi: float = 200.0
) -> tuple[float, float]:
    """Weighted Weibull MLE: the shape solves the profile equation
    ``g(k) = Σr x^k ln x / Σr x^k − 1/k − mean_r(ln x) = 0`` (increasing in k) by safeguarded Newton
    from ``k0`` (bisection when a step leaves the bracket); the scale follows in closed form."""
    lx = np.log(x)
    lx2 = lx * lx
    rs = r.sum()
    mean_lx = float((r * lx).sum() / rs)

    def g_and_slope(k: float) -> tuple[float, float]:
        w = r * x**k
        b = w.sum()
        a = (w * lx).sum() / b
        c = (w * lx2).sum() / b
        return float(a - 1.0 / k - mean_lx), float(c - a * a + 1.0 / (k * k))

    a_, b_ = lo, hi
    if g_and_slope(b_)[0] < 0:  # (near-)degenerate data: the shape runs to the bound
        k = b_
    elif g_and_slope(a_)[0] > 0:
        k = a_
    else:
        k = min(max(k0, a_), b_)
        for _ in range(100):
            gk, dk = g_and_slope(k)
            if gk > 0:
                b_ = k
            else:
                a_ = k
            if abs(gk) < 1e-10 or b_ - a_ < 1e-9:
                break
            step = k - gk / dk if dk > 0 else math.nan
            k = step if a_ < step < b_ else 0.5 * (a_ + b_)
    lam = float(((r * x**k).sum() / rs) ** (1.0 / k))
    return k, max(lam, 0.01)


def fit_weibull_mixture(p: Sequence[float] | np.ndarray, max_iter: int = 200, tol: float = 1e-8) -> WeibullMixture | None:
    """Maximum-likelihood two-Weibull mixture of the path probabilities ``p`` by EM.

    Initialised and bounded as in the RPC code (w=0.5, k1=1, λ1=1, k2=1.5, λ2=2; w in [0.2, 0.8],
    shapes and scales >= 0.01). Returns None when the data cannot support a fit (fewer than 3
    points, all equal, or a numerical failure).
    """
    x = np.clip(np.asarray(p, dtype=np.float64), 1e-12, None)
    if x.size < 3 or float(np.ptp(x)) < 1e-9 or not np.all(np.isfinite(x)):
        return None
    m = WeibullMixture(0.5, 1.0, 1.0, 1.5, 2.0)
    prev = -math.inf
    with np.errstate(all="ignore"):
        for _ in range(max_iter):
            d1, d2 = m.densities(x)
            tot = d1 + d2
            if not np.all(np.isfinite(tot)) or np.any(tot <= 0):
                return None
            ll = float(np.log(tot).sum())
            r1 = d1 / tot
            r2 = 1.0 - r1
            w = float(np.clip(r1.mean(), 0.2, 0.8))
            k1, l1 = _weighted_weibull_mle(x, r1 + 1e-12, m.k1)
            k2, l2 = _weighted_weibull_mle(x, r2 + 1e-12, m.k2)
            m = WeibullMixture(w, k1, l1, k2, l2)
            if abs(ll - prev) < tol * max(1.0, abs(ll)):
                break
            prev = ll
    return m


def prune_paths(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """RPC reasoning pruning: a boolean mask of the paths kept.

    Path i is dropped when its posterior membership in the low-mean component exceeds the
    high-mean one **and** ``p_i`` is below the mean of ``p``. Without a fit, every path is kept.
    """
    x = np.asarray(p, dtype=np.float64)
    keep = np.ones(x.shape, dtype=bool)
    fit = fit_weibull_mixture(x)
    if fit is None:
        return keep
    d1, d2 = fit.densities(np.clip(x, 1e-12, None))
    m1, m2 = fit.means()
    low, high = (d1, d2) if m1 < m2 else (d2, d1)
    keep &= ~((low > high) & (x < x.mean()))
    return keep


@dataclass(frozen=True, slots=True)
class RPCConfig:
    """``prune``: apply reasoning pruning (True in the paper); ``dedupe``: count identical completion
    texts once per answer (True in the RPC code)."""

    prune: bool = True
    dedupe: bool = True


def rpc_scores(
    answers_classes: Sequence[AnswerClass], texts: Sequence[str], path_probs: Sequence[float],
    config: RPCConfig = RPCConfig(),
) -> tuple[list[float], np.ndarray]:
    """Per-candidate RPC confidence (the normalised perplexity-consistency score of its answer) and
    the keep mask. Candidates in no class (no answer) score 0."""
    p = np.nan_to_num(np.asarray(path_probs, dtype=np.float64), nan=0.0)
    keep = prune_paths(p) if config.prune else np.ones(p.shape, dtype=bool)
    class_score = []
    for c in answers_classes:
        seen: set[str] = set()
        s = 0.0
        for i in c.members:
            if not keep[i] or (config.dedupe and texts[i] in seen):
                continue
            seen.add(texts[i])
            s += float(p[i])
        class_score.append(s)
    total = sum(class_score)
    out = [0.0] * len(texts)
    for c, s in zip(answers_classes, class_score):
        for i in c.members:
            out[i] = s / total if total > 0 else 0.0
    return out, keep


class RPC:
    """Reasoning-Pruning Perplexity Consistency (Zhou et al., arXiv 2502.00511).

    Path probability ``exp(mean logprob)`` per sample; low-probability paths pruned by a two-Weibull
    mixture; answer score = sum of surviving path probabilities; a candidate scores its answer's
    share. Needs chosen-token logprobs; no model calls.
    """

    name = "rpc"
    needs_model = False
    requires = frozenset({"tokens", "logprobs"})

    def __init__(self, config: RPCConfig | None = None, **options: bool) -> None:
        self.config = config or RPCConfig(**options)

    def score_sync(self, query: Query, candidates: Sequence[Candidate], backend: str | None = None) -> list[float]:
        arrays = candidate_arrays(candidates, self.name, backend=backend)
        probs = [math.exp(m) if not math.isnan(m := mean_logprob(a)) else 0.0 for a in arrays]
        out, _ = rpc_scores(_classes(query, candidates), [c.sample.text for c in candidates], probs, self.config)
        return out

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter | None = None) -> list[float]:
        return self.score_sync(query, candidates, lm.name if lm is not None else None)


# --- USC ----------------------------------------------------------------------------------------

USC_PROMPT_VERSION = "usc-1"
_USC_PICK = re.compile(r"most\s+consistent\s+response\s+is\s*[:*\s]*response\s*#?\s*(\d+)", re.IGNORECASE)
_ANY_PICK = re.compile(r"response\s*#?\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class USCConfig:
    """``max_tokens`` for the judge's reply; ``class_credit``: candidates whose answer is equivalent
    to the selected one's also score 1 (the signal then rates answers, like vote-share)."""

    max_tokens: int = 64
    class_credit: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ConfigError(f"max_tokens must be >= 8 to hold 'The most consistent response is Response X', "
                              f"got {self.max_tokens}")


def usc_prompt(question: str, responses: Sequence[str]) -> Prompt:
    body = "\n\n".join(f"Response {i + 1}:\n{r.strip()}" for i, r in enumerate(responses))
    return Prompt.user(
        f"I have generated the following responses to the question: {question.strip()}\n\n{body}\n\n"
        "Evaluate these responses and select the one that is most consistent with the majority of them. "
        'Start your reply with "The most consistent response is Response X" (without quotes), '
        "where X is its number."
    )


def parse_usc(text: str, n: int) -> int | None:
    """The 0-based index named in a USC reply (1-based in the text), or None."""
    m = _USC_PICK.search(text) or _ANY_PICK.search(text)
    if m is None:
        return None
    k = int(m.group(1))
    return k - 1 if 1 <= k <= n else None


class USCAgreement:
    """Model-judged agreement, Universal Self-Consistency (Chen et al., arXiv 2311.17311).

    One extra call (stage ``usc-agreement``) whose prompt lists every response in an order
    shuffled with a seed derived from the problem (position bias, METHODS pitfall 7); the named
    response scores 1 (with ``class_credit``, so do those with an equivalent answer), the others
    0. When the reply names no valid response, falls back to vote-share (logged). Cost: 1 call,
    prompt ≈ P + N·L tokens, at most ``max_tokens`` generated.
    """

    name = "usc-agreement"
    needs_model = True
    requires: frozenset[str] = frozenset()

    def __init__(self, config: USCConfig | None = None, **options: object) -> None:
        self.config = config or USCConfig(**options)  # type: ignore[arg-type]

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        n = len(candidates)
        if n == 0:
            return []
        if n == 1:
            return [1.0]
        order = list(range(n))
        seed = query_seed(query, USC_PROMPT_VERSION)
        random.Random(seed).shuffle(order)
        log.debug("usc-agreement: problem %s shown in order %s (seed %d)", query.problem.id, order, seed)
        prompt = usc_prompt(query.question, [candidates[i].sample.text for i in order])
        params = SamplingParams(max_tokens=self.config.max_tokens, temperature=0.0, logprobs=False)
        (reply,) = await lm.sample(prompt, params, 1, stage=self.name)
        pick = parse_usc(reply.text, n)
        if pick is None:
            log.warning("usc-agreement: no valid 'Response X' in the judge's reply %r; using vote-share",
                        reply.text[:80])
            return VoteShare().score_sync(query, candidates)
        chosen = order[pick]
        out = [0.0] * n
        out[chosen] = 1.0
        if self.config.class_credit:
            for c in _classes(query, candidates):
                if chosen in c.members:
                    for i in c.members:
                        out[i] = 1.0
        return out
