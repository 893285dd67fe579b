"""DecisionTally: the backend one decision samples through, billing each call the moment it returns.

Billing per call (not per finished decision) keeps ``/metrics`` exact when a decision is cancelled
(the client went away, the request timed out): the calls already answered stay billed. The tally
also counts the samples drawn and the answers seen, for the progress a stream reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from thinktwice.lm.base import Backend, TokenMonitor
from thinktwice.tasks.base import AnswerFormat
from thinktwice.types import Capabilities, Decision, Prompt, Sample, SamplingParams, Usage

__all__ = ["DecisionTally"]


class DecisionTally:
    """Wraps ``backend`` for one decision; ``bill`` gets the usage of every finished call."""

    def __init__(
        self,
        backend: Backend,
        bill: Callable[[Usage], None],
        answers: AnswerFormat | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.backend, self.bill, self.answers, self.on_progress = backend, bill, answers, on_progress
        self.name, self.model = backend.name, backend.model
        self.usage = Usage()
        self.samples = 0
        self.votes: Counter[str] = Counter()

    @property
    def capabilities(self) -> Capabilities:
        return self.backend.capabilities

    def count_tokens(self, prompt: Prompt) -> int:
        return self.backend.count_tokens(prompt)

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        samples = await self.backend.sample(prompt, params, n, monitor=monitor)
        used = Usage.total([s.usage for s in samples])
        self.usage = self.usage + used
        self.bill(used)
        self.samples += len(samples)
        if self.answers is not None:
            for s in samples:
                answer = self.answers.extract(s.text)
                if answer is not None:
                    self.votes[self.answers.canonical(answer)] += 1
        if self.on_progress is not None:
            self.on_progress()
        return samples

    def settle(self, decision: Decision) -> None:
        """Bill what ``decision`` spent outside :meth:`sample` (a signal's scoring pass charged to
        its Meter), so the total billed equals the decision's usage."""
        d, t = decision.usage, self.usage
        rest = Usage(
            calls=max(0, d.calls - t.calls),
            prompt_tokens=max(0, d.prompt_tokens - t.prompt_tokens),
            cached_prompt_tokens=max(0, d.cached_prompt_tokens - t.cached_prompt_tokens),
            completion_tokens=max(0, d.completion_tokens - t.completion_tokens),
        )
        if rest.calls or rest.prompt_tokens or rest.completion_tokens:
            self.usage = self.usage + rest
            self.bill(rest)

    def progress(self) -> dict[str, Any]:
        """Samples drawn so far, what they cost, and the answer leading the vote."""
        leader, votes = self.votes.most_common(1)[0] if self.votes else (None, 0)
        return {
            "samples": self.samples,
            "calls": self.usage.calls,
            "completion_tokens": self.usage.completion_tokens,
            "leader": leader,
            "leader_share": votes / self.samples if self.samples else None,
        }

    async def aclose(self) -> None:  # the tally does not own the backend
        return None

    def __getattr__(self, name: str) -> Any:  # other backend methods (scoring, listing) pass through
        return getattr(self.backend, name)
