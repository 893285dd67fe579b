"""CallLog: a Backend wrapper that stores every call's samples the moment they arrive, and serves them
again when a resumed run makes the same call.

The harness wraps the backend of each problem in a CallLog, under the strategy's Meter. A run killed in the
middle of a problem (or a problem that failed after some calls) has then lost nothing it paid for: the calls
are in the store's ``calls`` table until the problem's decision is stored. On ``--resume`` the same strategy
with the same per-problem seed makes the same calls; a call whose key (prompt, sampling parameters including
the seed, and n) was logged gets the logged samples back instead of a new generation. Their usage is billed
once, to the decision that finally uses them (the killed attempt stored no decision). Calls made with a token
monitor (DeepConf online) are logged but never served again: the monitor's own state must see every token.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from thinktwice.eval.store import RunStore
from thinktwice.lm.base import Backend, TokenMonitor
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams

__all__ = ["CallLog", "call_key"]


def call_key(prompt: Prompt, params: SamplingParams, n: int, monitored: bool = False) -> str:
    """A stable key of one call: the same prompt, parameters (seed included) and n give the same key."""
    raw = json.dumps({"prompt": prompt.to_dict(), "params": params.to_dict(), "n": n}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32] + ("-monitored" if monitored else "")


class CallLog:
    """Logs the calls of one problem of one run; ``reuse`` holds the calls a previous attempt logged."""

    def __init__(self, backend: Backend, store: RunStore, run_id: int, problem_id: str,
                 reuse: Mapping[str, Sequence[Sequence[Sample]]] | None = None) -> None:
        self.backend = backend
        self.store, self.run_id, self.problem_id = store, run_id, problem_id
        self.name, self.model = backend.name, backend.model
        self._reuse = {k: list(v) for k, v in (reuse or {}).items()}
        self._seq: dict[str, int] = {}
        self.reused_calls = 0
        self.reused_samples = 0

    @property
    def capabilities(self) -> Capabilities:
        return self.backend.capabilities

    def count_tokens(self, prompt: Prompt) -> int:
        return self.backend.count_tokens(prompt)

    async def sample(self, prompt: Prompt, params: SamplingParams, n: int = 1, *,
                     monitor: TokenMonitor | None = None) -> list[Sample]:
        key = call_key(prompt, params, n, monitored=monitor is not None)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        stored = self._reuse.get(key)
        if monitor is None and stored:
            samples = list(stored.pop(0))
            if len(samples) == n:
                self.reused_calls += 1
                self.reused_samples += len(samples)
                return samples
        samples = await self.backend.sample(prompt, params, n, monitor=monitor)
        self.store.put_call(self.run_id, self.problem_id, key, seq, samples)
        return samples

    async def aclose(self) -> None:  # the CallLog does not own the backend
        return None
