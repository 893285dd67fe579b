"""Adaptive sampling with a stopping rule: Adaptive-Consistency (Aggarwal et al., arXiv 2305.11860)
and Early-Stopping Self-Consistency (Li et al., arXiv 2401.10480). METHODS §6.1-6.2.

**Adaptive-Consistency** stops when the Beta-posterior probability that the leading answer is
ahead of the runner-up, ``P = ∫_{1/2}^1 u^{v1}(1-u)^{v2} du / ∫_0^1 u^{v1}(1-u)^{v2} du``, reaches
0.95, with at most 40 samples. The paper samples one at a time. Here samples are drawn in
concurrent batches whose size is the *smallest number of further samples that could possibly
reach the threshold* (all of them joining the leader). Because ``P`` only grows when the leader
gains and no shorter prefix of the batch can reach the threshold, the stop point is exactly the
one-at-a-time rule's stop point for the same sample stream: batching costs no extra samples or
tokens, only rounds of latency (about as many rounds as the posterior needs to move; on the
first round 4 samples are drawn at once). Every drawn sample's tokens are billed.

**ESC** draws windows of ``w = 5`` samples (one call with ``n = 5``) and stops after a window whose
answers are all equivalent, else continues up to ``L = 40`` samples; the answer is the majority
over every sample drawn. Windows are sequential by design (each decides whether to draw the next),
and each window re-sends the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import ClassVar

from thinktwice.errors import ConfigError
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.sampling import draw, sampling_params
from thinktwice.strategies.voting import group_answers, vote
from thinktwice.types import Candidate

__all__ = ["AdaptiveConsistency", "EarlyStoppingSC", "beta_stop_probability", "min_batch_to_stop",
           "top_two_counts"]


def beta_stop_probability(v1: int, v2: int) -> float:
    """``P(u > 1/2)`` for ``u ~ Beta(v1 + 1, v2 + 1)``: the chance the leader's true share beats the
    runner-up's (METHODS §6.1). Exact for integer counts: ``P(Binomial(v1+v2+1, 1/2) <= v1)``.

    >>> beta_stop_probability(4, 0)
    0.96875
    """
    if v1 < 0 or v2 < 0:
        raise ValueError("vote counts must be >= 0")
    m = v1 + v2 + 1
    return sum(comb(m, j) for j in range(v1 + 1)) / 2**m


def min_batch_to_stop(v1: int, v2: int, threshold: float, cap: int) -> int:
    """The fewest further samples (at most ``cap``) after which the rule *could* stop: the least
    ``k >= 1`` with ``P(v1 + k, v2) >= threshold``, or ``cap`` when none within it can.

    >>> min_batch_to_stop(0, 0, 0.95, 40)
    4
    """
    for k in range(1, cap + 1):
        if beta_stop_probability(v1 + k, v2) >= threshold:
            return k
    return cap


def top_two_counts(cands: list[Candidate], fmt: object) -> tuple[int, int]:
    """Sizes of the two largest answer classes (0 when absent); no-answer samples do not count."""
    sizes = sorted((len(c.members) for c in group_answers([c.answer for c in cands], fmt)), reverse=True)  # type: ignore[arg-type]
    return (sizes[0] if sizes else 0, sizes[1] if len(sizes) > 1 else 0)


@dataclass(frozen=True)
class AdaptiveConsistency(BaseStrategy):
    """Sample until the Beta stopping rule is confident in the leader (0.95) or 40 samples.

    ``stopped_because`` is "converged" when the rule fired, "max-samples" at the cap and "budget"
    when the Budget ran out first (the majority so far is returned).

    >>> AdaptiveConsistency().threshold
    0.95
    """

    name: ClassVar[str] = "adaptive-consistency"
    threshold: float = 0.95
    max_samples: int = 40
    temperature: float = 0.7
    top_p: float = 1.0
    batch: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0.5 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0.5, 1), got {self.threshold}")
        if self.max_samples < 1 or self.batch < 1:
            raise ConfigError(f"max_samples and batch must be >= 1, got {self.max_samples}, {self.batch}")

    async def decide(self, ctx: RunContext) -> Verdict:
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens)
        fmt = ctx.query.answers
        cands: list[Candidate] = []
        stopped = "max-samples"
        while len(cands) < self.max_samples:
            v1, v2 = top_two_counts(cands, fmt)
            k = min_batch_to_stop(v1, v2, self.threshold, self.max_samples - len(cands))
            got, short = await draw(ctx, k, params, self.batch)
            cands.extend(got)
            v1, v2 = top_two_counts(cands, fmt)
            p = beta_stop_probability(v1, v2)
            ctx.note("round", drew=len(got), samples=len(cands), leader=v1, runner_up=v2, p_leader=round(p, 6))
            if p >= self.threshold and v1 > 0:
                stopped = "converged"
                break
            if short:
                stopped = "budget"
                break
        v = vote(cands, fmt)
        ctx.note("stop", because=stopped, samples=len(cands), tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)


@dataclass(frozen=True)
class EarlyStoppingSC(BaseStrategy):
    """Windows of ``window`` samples (one call each) until one window agrees fully, at most ``max_samples``.

    A last window cut short by the cap cannot agree (it holds fewer than ``window`` answers); a cap
    below the window is one such window, i.e. self-consistency at the cap.

    >>> EarlyStoppingSC().window
    5
    """

    name: ClassVar[str] = "esc"
    window: int = 5
    max_samples: int = 40
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1 or self.max_samples < 1:
            raise ConfigError(f"esc needs window and max_samples >= 1, got {self.window}, {self.max_samples}")

    async def decide(self, ctx: RunContext) -> Verdict:
        params = sampling_params(ctx, self.temperature, self.top_p, self.max_tokens)
        fmt = ctx.query.answers
        cands: list[Candidate] = []
        stopped = "max-samples"
        while len(cands) < self.max_samples:
            k = min(self.window, self.max_samples - len(cands))
            got, short = await draw(ctx, k, params, batch=k)
            cands.extend(got)
            classes = group_answers([c.answer for c in got], fmt)
            agree = k == self.window and len(got) == k and len(classes) == 1 and len(classes[0].members) == k
            ctx.note("window", drew=len(got), samples=len(cands), answers=[c.answer for c in got], unanimous=agree)
            if agree:
                stopped = "converged"
                break
            if short:
                stopped = "budget"
                break
        v = vote(cands, fmt)
        ctx.note("stop", because=stopped, samples=len(cands), tallies=v.tallies)
        return Verdict(v.answer, v.share, cands, v.representative, stopped_because=stopped, votes=v.tallies)
