"""PoolBackend: a Backend that replays a stored pool of samples of one problem, in a seeded order.

Sampling is the expensive part; deciding is cheap (DESIGN.md, "Sample pools"). A pool of ``N``
samples per problem, drawn once and stored with their token statistics, lets any sampling-based
strategy (self-consistency, weighted votes, adaptive stopping, DeepConf) run offline unchanged:
the strategy talks to a :class:`PoolBackend` exactly as it would to a live one.

Replay is faithful to the accounting rule: a call's first sample carries ``calls=1`` and the
problem's prompt tokens, ``max_tokens`` truncates a stored sample, and a ``monitor`` that stops a
sequence mid-way truncates it there, so only the tokens actually served are billed.

>>> from thinktwice.types import Sample, SamplingParams, Prompt, Usage
>>> import asyncio
>>> pool = [Sample(text=str(i), usage=Usage(1, 10, 0, 1)) for i in range(4)]
>>> b = PoolBackend(pool, seed=0)
>>> len(asyncio.run(b.sample(Prompt.user("q"), SamplingParams(), n=3)))
3
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from thinktwice.errors import BackendError, CapabilityError
from thinktwice.lm.base import TokenMonitor, estimate_tokens
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, TokenStat, Usage

__all__ = ["PoolBackend", "PoolExhausted", "PoolSource", "pool_capabilities"]


class PoolExhausted(BackendError):
    """A pool replay was asked for more samples than the pool holds."""


def pool_capabilities(samples: Sequence[Sample]) -> Capabilities:
    """What replaying ``samples`` can honestly offer: only the statistics every sample carries."""
    has_tokens = bool(samples) and all(s.tokens is not None for s in samples)
    width = 0
    full = has_tokens
    if has_tokens:
        width = min((max((len(t.top) for t in s.tokens or ()), default=0) for s in samples), default=0)
        full = all(t.self_certainty is not None for s in samples for t in (s.tokens or ()))
    return Capabilities(
        logprobs=has_tokens, top_logprobs=width, full_vocab=full, native_n=True, prefix_sharing=True,
        continuation=False, monitor=has_tokens, max_n=max(1, len(samples)),
    )


def _prompt_tokens(samples: Sequence[Sample]) -> int | None:
    """The prompt size billed when the pool was drawn (the largest per-call prompt count seen)."""
    seen = [s.usage.prompt_tokens for s in samples if s.usage.prompt_tokens > 0]
    return max(seen) if seen else None


class PoolBackend:
    """Serves the stored ``samples`` of one problem in a random order fixed by ``seed``.

    Every call takes the next ``n`` samples of that order, whatever the prompt or sampling
    seed, so two strategies replayed with the same ``seed`` see the same stream (common random
    numbers). When ``prompt`` is given, a call with any other prompt (a refinement turn, a
    verification question) raises CapabilityError: a pool holds answers to the problem's own
    prompt only, and serving them to another prompt would replay nonsense silently.
    ``prompt_tokens`` is what one call's prompt costs; by default the largest prompt
    count stored with the samples, else an estimate from the prompt text. ``max_tokens`` and
    ``monitor`` truncate samples that carry token statistics; usage bills the served tokens.

    Raises:
        PoolExhausted: when a call asks for more samples than are left.
    """

    name = "pool"

    def __init__(
        self,
        samples: Sequence[Sample],
        seed: int = 0,
        *,
        model: str = "pool",
        capabilities: Capabilities | None = None,
        prompt_tokens: int | None = None,
        shuffle: bool = True,
        prompt: Prompt | None = None,
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.samples = tuple(samples)
        self.capabilities = capabilities or pool_capabilities(self.samples)
        self.prompt_tokens = prompt_tokens if prompt_tokens is not None else _prompt_tokens(self.samples)
        order = list(range(len(self.samples)))
        if shuffle:
            random.Random(seed).shuffle(order)
        self.order = tuple(order)
        self.served = 0
        self.calls: list[tuple[Prompt, SamplingParams, int]] = []

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.served

    def count_tokens(self, prompt: Prompt) -> int:
        return self.prompt_tokens if self.prompt_tokens is not None else estimate_tokens(prompt.text())

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        if self.prompt is not None and prompt != self.prompt:
            raise CapabilityError(
                "this strategy asks the model something other than the problem's prompt (a "
                f"{'continuation' if prompt.assistant_prefix else 'follow-up'}); a sample pool can "
                "only replay the original prompt. Run it live instead."
            )
        if n > self.remaining:
            raise PoolExhausted(
                f"pool of {len(self.samples)} samples has {self.remaining} left; {n} were asked for. "
                "Draw a larger pool or lower the strategy's sample count.",
                backend=self.name, model=self.model,
            )
        self.calls.append((prompt, params, n))
        picked = [self.samples[self.order[self.served + i]] for i in range(n)]
        self.served += n
        prompt_cost = self.count_tokens(prompt)
        return [self._serve(s, i, params, prompt_cost, monitor) for i, s in enumerate(picked)]

    def _serve(
        self, s: Sample, i: int, params: SamplingParams, prompt_cost: int, monitor: TokenMonitor | None
    ) -> Sample:
        text, tokens, finish = s.text, s.tokens, s.finish_reason
        completion = s.usage.completion_tokens or (len(tokens) if tokens is not None else estimate_tokens(text))
        if tokens is not None:
            kept = _truncate(tokens, params.max_tokens, i, monitor if self.capabilities.monitor else None)
            if len(kept) < len(tokens):
                finish = "monitor" if len(kept) < min(len(tokens), params.max_tokens) else "length"
                text = _cut_text(text, tokens, len(kept))
                tokens = kept
                completion = len(kept)
            elif len(tokens) != completion:
                completion = len(tokens)
        elif completion > params.max_tokens:  # text-only pool: cannot cut by token; cap the bill
            completion, finish = params.max_tokens, "length"
        usage = Usage(
            calls=1 if i == 0 else 0,
            prompt_tokens=prompt_cost if i == 0 else 0,
            completion_tokens=completion,
            estimated=s.usage.estimated,
        )
        return replace(s, text=text, tokens=tokens if params.logprobs else None, finish_reason=finish,
                       usage=usage)

    async def aclose(self) -> None:
        return None


def _truncate(
    tokens: Sequence[TokenStat], max_tokens: int, index: int, monitor: TokenMonitor | None
) -> tuple[TokenStat, ...]:
    limit = min(len(tokens), max_tokens)
    if monitor is None:
        return tuple(tokens[:limit])
    for pos in range(limit):
        if monitor(index, pos, tokens[pos]):
            return tuple(tokens[: pos + 1])
    return tuple(tokens[:limit])


def _cut_text(text: str, tokens: Sequence[TokenStat], keep: int) -> str:
    """The text of the first ``keep`` tokens (exact when the token texts spell the text)."""
    joined = "".join(t.token for t in tokens)
    if joined == text:
        return "".join(t.token for t in tokens[:keep])
    # token texts do not spell the text (special tokens, byte pieces): cut proportionally
    return text[: round(len(text) * keep / max(1, len(tokens)))]


class PoolSource:
    """Stored pools of many problems; builds one :class:`PoolBackend` per (problem, seed).

    >>> src = PoolSource({"p1": [Sample(text="1")]})
    >>> src.backend("p1", seed=0).remaining
    1
    """

    def __init__(self, pools: Mapping[str, Sequence[Sample]], *, model: str = "pool") -> None:
        self.pools = {k: tuple(v) for k, v in pools.items()}
        self.model = model

    @classmethod
    def from_store(cls, store: object, run_id: int, *, stage: str | None = "sample") -> PoolSource:
        """The samples of a RunStore run (only those of ``stage``; None keeps every stage)."""
        rows: Iterable[object] = store.samples(run_id)  # type: ignore[attr-defined]
        pools: dict[str, list[Sample]] = {}
        for r in sorted(rows, key=lambda r: (r.problem_id, r.index)):  # type: ignore[attr-defined]
            if stage is not None and r.stage != stage:  # type: ignore[attr-defined]
                continue
            pools.setdefault(r.problem_id, []).append(r.sample)  # type: ignore[attr-defined]
        model = ""
        try:
            model = store.get_run(run_id).model or ""  # type: ignore[attr-defined]
        except AttributeError:
            pass
        return cls(pools, model=model or "pool")

    def __contains__(self, problem_id: object) -> bool:
        return problem_id in self.pools

    def __len__(self) -> int:
        return len(self.pools)

    def size(self, problem_id: str) -> int:
        return len(self.pools.get(problem_id, ()))

    def min_size(self) -> int:
        return min((len(v) for v in self.pools.values()), default=0)

    def mean_completion_tokens(self) -> float:
        """Mean generated tokens per stored sample, over all problems."""
        toks = [s.usage.completion_tokens or (len(s.tokens) if s.tokens else 0)
                for v in self.pools.values() for s in v]
        return sum(toks) / len(toks) if toks else 0.0

    def backend(self, problem_id: str, seed: int = 0, **options: object) -> PoolBackend:
        try:
            samples = self.pools[problem_id]
        except KeyError:
            raise PoolExhausted(f"the pool has no samples of problem {problem_id!r}",
                                backend="pool", model=self.model) from None
        return PoolBackend(samples, seed, model=self.model, **options)  # type: ignore[arg-type]
