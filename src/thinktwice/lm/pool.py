"""PoolBackend: a Backend that replays a stored pool of samples of one problem, in a seeded order.

Sampling is the expensive part; deciding is cheap (DESIGN.md, "Sample pools"). A pool of ``N``
samples per problem, drawn once and stored with their token statistics, lets any sampling-based
strategy (self-consistency, weighted votes, adaptive stopping, DeepConf) run offline unchanged:
the strategy talks to a :class:`PoolBackend` exactly as it would to a live one.

Replay is faithful to the accounting rule: on a backend with native ``n`` (the default) a call's
first sample carries ``calls=1`` and the problem's prompt tokens; with ``native_n=False`` every
sample is its own call, as a backend without ``n`` would bill it. A sample served whole bills the
generated tokens stored with it; ``max_tokens`` truncates a stored sample, and a ``monitor`` that
stops a sequence truncates it there, so only the tokens actually served are billed.

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
    if has_tokens:  # an empty sample (no tokens) says nothing about the width
        width = min((max(len(t.top) for t in s.tokens) for s in samples if s.tokens), default=0)
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
    ``native_n`` overrides the capability of the same name (and with it the billing: one call per
    request, or one per sample). A monitor with a ``first_stop(index, tokens)`` method (DeepConf's
    window monitor) judges each stored sequence at once instead of token by token.

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
        native_n: bool | None = None,
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.samples = tuple(samples)
        caps = capabilities or pool_capabilities(self.samples)
        if native_n is not None:
            caps = replace(caps, native_n=native_n)
        self.capabilities = caps
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
            keep, stopped = _truncate(tokens, params.max_tokens, i, monitor if self.capabilities.monitor else None)
            if stopped or keep < len(tokens):
                # a monitor that fires on the last token still stopped the sequence (no end token)
                finish = "monitor" if stopped else "length"
                text = _cut_text(text, tokens, keep) if keep < len(tokens) else text
                tokens = tuple(tokens[:keep])
                completion = keep
        elif completion > params.max_tokens:  # text-only pool: cannot cut by token; cap the bill
            completion, finish = params.max_tokens, "length"
        own_call = i == 0 or not self.capabilities.native_n
        usage = Usage(
            calls=1 if own_call else 0,
            prompt_tokens=prompt_cost if own_call else 0,
            completion_tokens=completion,
            estimated=s.usage.estimated,
        )
        return replace(s, text=text, tokens=tokens if params.logprobs else None, finish_reason=finish,
                       usage=usage)

    async def aclose(self) -> None:
        return None


def _truncate(
    tokens: Sequence[TokenStat], max_tokens: int, index: int, monitor: TokenMonitor | None
) -> tuple[int, bool]:
    """How many of ``tokens`` are served, and whether the monitor stopped the sequence."""
    limit = min(len(tokens), max_tokens)
    if monitor is None:
        return limit, False
    first_stop = getattr(monitor, "first_stop", None)
    if first_stop is not None:
        at = first_stop(index, tokens[:limit])
        return (limit, False) if at is None else (int(at), True)
    for pos in range(limit):
        if monitor(index, pos, tokens[pos]):
            return pos + 1, True
    return limit, False


def _cut_text(text: str, tokens: Sequence[TokenStat], keep: int) -> str:
    """The text of the first ``keep`` tokens (exact when the token texts spell the text)."""
    joined = "".join(t.token for t in tokens)
    if joined == text:
        return "".join(t.token for t in tokens[:keep])
    # token texts do not spell the text (special tokens, byte pieces): cut proportionally
    return text[: round(len(text) * keep / max(1, len(tokens)))]


class PoolSource:
    """Stored pools of many problems; builds one :class:`PoolBackend` per (problem, seed).

    ``native_n`` is what the backend that drew the pool could do (a pool run records it), so
    replays bill calls and prompt tokens as it would; None keeps the pool's default (native n).

    >>> src = PoolSource({"p1": [Sample(text="1")]})
    >>> src.backend("p1", seed=0).remaining
    1
    """

    def __init__(self, pools: Mapping[str, Sequence[Sample]], *, model: str = "pool",
                 native_n: bool | None = None) -> None:
        self.pools = {k: tuple(v) for k, v in pools.items()}
        self.model = model
        self.native_n = native_n

    @classmethod
    def from_store(cls, store: object, run_id: int, *, stage: str | None = "sample") -> PoolSource:
        """The samples of a RunStore run (only those of ``stage``; None keeps every stage), billed
        with or without native n as the run recorded its backend (``config["native_n"]``), else as
        the stored samples show it (siblings of an n-sample call carry ``usage.calls == 0``; the
        same rule as ``thinktwice curve``)."""
        rows: Iterable[object] = store.samples(run_id)  # type: ignore[attr-defined]
        pools: dict[str, list[Sample]] = {}
        for r in sorted(rows, key=lambda r: (r.problem_id, r.index)):  # type: ignore[attr-defined]
            if stage is not None and r.stage != stage:  # type: ignore[attr-defined]
                continue
            pools.setdefault(r.problem_id, []).append(r.sample)  # type: ignore[attr-defined]
        model, recorded = "", None
        try:
            info = store.get_run(run_id)  # type: ignore[attr-defined]
            model = info.model or ""
            recorded = (getattr(info, "config", None) or {}).get("native_n")
        except AttributeError:
            pass
        native_n = recorded if isinstance(recorded, bool) else any(
            s.usage.calls == 0 for v in pools.values() for s in v)
        return cls(pools, model=model or "pool", native_n=native_n)

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
        if self.native_n is not None:
            options.setdefault("native_n", self.native_n)
        return PoolBackend(samples, seed, model=self.model, **options)  # type: ignore[arg-type]
