"""Meter: a Backend wrapper that charges every call to a Budget and keeps the bill by stage.

Strategies and signals never call a backend directly; they call the Meter, so a Decision's cost
comes from what was actually spent, not from self-reports. Running out of budget raises
:class:`BudgetExhausted`, which strategies turn into ``stopped_because="budget"``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from thinktwice.lm.base import Backend, TokenMonitor
from thinktwice.types import Budget, Capabilities, Prompt, Sample, SamplingParams, Usage

__all__ = ["Meter", "BudgetExhausted", "CallRecord"]


class BudgetExhausted(Exception):
    """Raised by the Meter when a call cannot be made within the budget (an outcome, not a fault)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"budget exhausted: {what}")
        self.what = what


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One metered call: its stage, the number of samples asked and got, and its usage."""

    stage: str
    n: int
    usage: Usage


class Meter:
    """Wraps ``backend``; enforces ``budget`` before each call and records usage after it.

    Budget checks reserve the worst case of concurrent in-flight calls, so concurrent batches
    never overshoot: generated tokens are capped by lowering ``max_tokens`` per sample, samples by
    lowering ``n``. Prompt tokens are checked with ``backend.count_tokens`` before the call.
    """

    def __init__(self, backend: Backend, budget: Budget | None = None) -> None:
        self.backend = backend
        self.budget = budget or Budget()
        self.name = backend.name
        self.model = backend.model
        self.capabilities: Capabilities = backend.capabilities
        self.records: list[CallRecord] = []
        self._stages: dict[str, Usage] = defaultdict(Usage)
        self._spent = Usage()
        self._samples = 0
        # reservations of in-flight calls
        self._r_calls = 0
        self._r_tokens = 0
        self._r_prompt = 0
        self._r_samples = 0

    # -- accounting ---------------------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        return self._spent

    @property
    def stages(self) -> dict[str, Usage]:
        return dict(self._stages)

    @property
    def samples_drawn(self) -> int:
        return self._samples

    def _left(self, limit: int | None, spent: int, reserved: int) -> int | None:
        return None if limit is None else limit - spent - reserved

    @property
    def remaining_tokens(self) -> int | None:
        return self._left(self.budget.max_tokens, self._spent.completion_tokens, self._r_tokens)

    @property
    def remaining_calls(self) -> int | None:
        return self._left(self.budget.max_calls, self._spent.calls, self._r_calls)

    @property
    def remaining_samples(self) -> int | None:
        return self._left(self.budget.max_samples, self._samples, self._r_samples)

    @property
    def remaining_prompt_tokens(self) -> int | None:
        return self._left(self.budget.max_prompt_tokens, self._spent.prompt_tokens, self._r_prompt)

    def can_afford(self, n: int = 1, prompt: Prompt | None = None) -> bool:
        """True when at least one sample of a call for ``prompt`` fits the budget."""
        try:
            self._plan(n, 1, prompt)
        except BudgetExhausted:
            return False
        return True

    def charge(self, usage: Usage, stage: str) -> None:
        """Record usage spent outside :meth:`sample` (e.g. a scoring pass of a backend)."""
        self._spent = self._spent + usage
        self._stages[stage] = self._stages[stage] + usage
        self.records.append(CallRecord(stage, 0, usage))

    # -- the call -----------------------------------------------------------------------------
    def _plan(self, n: int, max_tokens: int, prompt: Prompt | None) -> tuple[int, int, int]:
        calls_left = self.remaining_calls
        if calls_left is not None and calls_left < 1:
            raise BudgetExhausted("calls")
        samples_left = self.remaining_samples
        if samples_left is not None:
            if samples_left < 1:
                raise BudgetExhausted("samples")
            n = min(n, samples_left)
        tokens_left = self.remaining_tokens
        if tokens_left is not None:
            if tokens_left < 1:
                raise BudgetExhausted("generated tokens")
            if tokens_left < n:
                n = tokens_left
            max_tokens = min(max_tokens, tokens_left // n)
        prompt_cost = 0
        prompt_left = self.remaining_prompt_tokens
        if prompt_left is not None and prompt is not None:
            per_call = self.backend.count_tokens(prompt)
            copies = 1 if self.capabilities.native_n else n
            if per_call * copies > prompt_left:
                copies_fit = prompt_left // per_call if per_call else copies
                if copies_fit < 1:
                    raise BudgetExhausted("prompt tokens")
                if not self.capabilities.native_n:
                    n = min(n, copies_fit)
                    copies = n
            prompt_cost = per_call * copies
        return n, max_tokens, prompt_cost

    async def sample(
        self,
        prompt: Prompt,
        params: SamplingParams,
        n: int = 1,
        *,
        monitor: TokenMonitor | None = None,
        stage: str = "sample",
    ) -> list[Sample]:
        """Draw up to ``n`` samples within the budget (fewer when the budget allows fewer).

        Raises BudgetExhausted when not even one sample fits.
        """
        if n < 1:
            return []
        n, max_tokens, prompt_cost = self._plan(n, params.max_tokens, prompt)
        if max_tokens != params.max_tokens:
            params = params.replace(max_tokens=max_tokens)
        self._r_calls += 1
        self._r_samples += n
        self._r_tokens += n * max_tokens
        self._r_prompt += prompt_cost
        t0 = time.perf_counter()
        try:
            samples = await self.backend.sample(prompt, params, n, monitor=monitor)
        finally:
            self._r_calls -= 1
            self._r_samples -= n
            self._r_tokens -= n * max_tokens
            self._r_prompt -= prompt_cost
        usage = Usage.total([s.usage for s in samples])
        if usage.seconds == 0.0:
            usage = Usage(usage.calls, usage.prompt_tokens, usage.cached_prompt_tokens,
                          usage.completion_tokens, time.perf_counter() - t0, usage.estimated)
        self._spent = self._spent + usage
        self._stages[stage] = self._stages[stage] + usage
        self._samples += len(samples)
        self.records.append(CallRecord(stage, len(samples), usage))
        return samples

    def count_tokens(self, prompt: Prompt) -> int:
        return self.backend.count_tokens(prompt)

    async def aclose(self) -> None:  # the Meter does not own the backend
        return None
