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
from thinktwice.signals.rpc import (
    Pruning,
    consistency_scores,
    no_pruning,
    path_probs,
    path_weights,
    reasoning_pruning,
)
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
class RPCConfig:
    """``prune``: apply reasoning pruning (True in the paper); ``dedupe``: count a repeated
    (completion text, path probability) once (True in the RPC code)."""

    prune: bool = True
    dedupe: bool = True


def rpc_scores(
    answers_classes: Sequence[AnswerClass], texts: Sequence[str], probs: Sequence[float] | np.ndarray,
    config: RPCConfig = RPCConfig(),
) -> tuple[list[float], Pruning]:
    """Per-candidate RPC confidence (the normalised perplexity-consistency score of its answer) and
    the pruning outcome. Candidates in no class (no answer), or without a finite path probability,
    add nothing; see :mod:`thinktwice.signals.rpc`."""
    pruning = reasoning_pruning(probs) if config.prune else no_pruning(len(probs), "pruning off")
    weights = path_weights(texts, probs, pruning.keep, config.dedupe)
    return consistency_scores([c.members for c in answers_classes], weights), pruning


class RPC:
    """Reasoning-Pruning Perplexity Consistency (Zhou et al., arXiv 2502.00511).

    Path probability ``exp(mean logprob)`` per sample; low-probability paths pruned by a two-Weibull
    mixture; answer score = sum of surviving path probabilities; a candidate scores its answer's
    share. Needs chosen-token logprobs; no model calls. The algorithm lives in
    :mod:`thinktwice.signals.rpc` (shared with the ``rpc`` strategy); when the pool cannot support
    the mixture fit nothing is pruned, logged at debug level.
    """

    name = "rpc"
    needs_model = False
    requires = frozenset({"tokens", "logprobs"})

    def __init__(self, config: RPCConfig | None = None, **options: bool) -> None:
        self.config = config or RPCConfig(**options)

    def score_sync(self, query: Query, candidates: Sequence[Candidate], backend: str | None = None) -> list[float]:
        arrays = candidate_arrays(candidates, self.name, backend=backend)
        probs = path_probs([mean_logprob(a) for a in arrays])
        texts = [c.sample.text for c in candidates]
        out, pruning = rpc_scores(_classes(query, candidates), texts, probs, self.config)
        if pruning.fallback is not None and self.config.prune:
            log.debug("rpc: problem %s, nothing pruned: %s", query.problem.id, pruning.fallback)
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
