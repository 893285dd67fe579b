"""Iterative deepening: when the answer looks unsure, append a self-correction trigger ("Wait, ...")
to the model's own response and let it continue, up to ``depth`` times.

After Iterative Deepening Sampling (Chen, Koenig, Dilkina, arXiv 2502.05449; METHODS §6.6) and
START's hint insertion (Li et al., arXiv 2503.04625; §6.7). Differences, on purpose: a trigger is
inserted only when a confidence signal on the latest segment is below ``threshold`` (not at fixed
geometric checkpoints), so confident answers cost one call. The continuation goes through
``Prompt.with_prefix`` (the assistant turn already holds the response so far plus the trigger),
which needs a backend with the ``continuation`` capability. The answer is extracted from the whole
response, so the reconsidered final answer wins. Prompt tokens grow with each round (the response
so far is re-sent); the Decision's usage counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from thinktwice.errors import CapabilityError, ConfigError, ContextLengthExceeded
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.gate import PROBABILITY_SIGNALS, default_threshold
from thinktwice.strategies.sampling import sampling_params
from thinktwice.strategies.scoring import SignalSpec, check_signal, resolve_signal, score_candidates
from thinktwice.types import Candidate

__all__ = ["DEFAULT_TRIGGERS", "IterativeDeepening"]

DEFAULT_TRIGGERS = (
    "Wait,",
    "Wait, let me double-check each step.",
    "Hmm, maybe I made a mistake. Let me verify the calculation again.",
)
"""Continuation triggers, used in turn (wording ours; the papers' exact texts are unverified)."""


@dataclass(frozen=True)
class IterativeDeepening(BaseStrategy):
    """One response; while its latest segment's ``signal`` < ``threshold``, append a trigger and continue.

    ``stopped_because``: "confident" once a segment clears the threshold, "max-samples" after
    ``depth`` continuations, "budget" when the budget ends the loop.
    """

    name: ClassVar[str] = "iterative-deepening"
    depth: int = 3
    signal: SignalSpec = "path-prob"
    threshold: float | None = None
    triggers: tuple[str, ...] = DEFAULT_TRIGGERS
    temperature: float = 0.7
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ConfigError(f"depth must be >= 0, got {self.depth}")
        if not self.triggers or any(not t.strip() for t in self.triggers):
            raise ConfigError("triggers must be non-empty strings")
        default_threshold(self.signal, self.threshold)

    async def decide(self, ctx: RunContext) -> Verdict:
        if self.depth > 0 and not ctx.meter.capabilities.continuation:
            raise CapabilityError(f"iterative-deepening needs a backend that continues an assistant prefix; "
                                  f"{ctx.meter.name!r} cannot")
        sig = resolve_signal(self.signal)
        check_signal(sig, ctx)
        threshold = default_threshold(self.signal, self.threshold)
        params = sampling_params(ctx, self.temperature, 1.0, self.max_tokens)
        fmt = ctx.query.answers
        base = ctx.query.prompt.assistant_prefix
        [seg] = await ctx.sample(1, params)
        text = seg.sample.text
        cands: list[Candidate] = []
        stopped = "max-samples"
        for d in range(self.depth + 1):
            [scored] = await score_candidates(sig, ctx, [seg])
            s = scored.scores[sig.name]
            full = Candidate(replace(seg.sample, text=text), fmt.extract(text), scored.scores,
                             stage="sample" if d == 0 else f"deepen-{d}")
            cands.append(full)
            ctx.note("segment", depth=d, answer=full.answer, score=s, threshold=threshold)
            if s >= threshold and full.answer is not None:
                stopped = "confident"
                break
            if d == self.depth:
                break
            trigger = self.triggers[d % len(self.triggers)]
            prefix = text.rstrip() + "\n\n" + trigger + " "
            try:
                [seg] = await ctx.sample(1, params, prompt=ctx.query.prompt.with_prefix(base + prefix),
                                         stage="deepen")
            except (BudgetExhausted, ContextLengthExceeded) as e:
                stopped = "budget"
                ctx.note("stop", reason="context full" if isinstance(e, ContextLengthExceeded) else "budget")
                break
            ctx.note("trigger", depth=d + 1, trigger=trigger)
            text = prefix + seg.sample.text
        final = cands[-1]
        conf = final.scores.get(sig.name) if sig.name in PROBABILITY_SIGNALS else None
        return Verdict(final.answer, conf, cands, len(cands) - 1, stopped_because=stopped,
                       votes={final.answer: 1.0} if final.answer is not None else {})
