"""OrganismBackend: the from-scratch arithmetic transformer behind the Backend protocol.

The organism has no chat template: the prompt text is ``Prompt.raw`` if set, else the content of
the last user message; a newline is added when the text does not end with one (the model writes
its solution on the next line), then ``assistant_prefix`` is appended (continuation). Generation
runs in a worker thread, one call at a time; the prompt is processed once and its KV cache shared
by the ``n`` sequences. Token statistics come from the full vocabulary (see
:mod:`thinktwice.organism.generate`); a sample's ``tokens`` include the terminating newline or
``<eos>`` token, which is billed but not part of ``text``.

>>> from thinktwice import lm
>>> backend = lm.create("organism")            # the shipped 'small' checkpoint
>>> backend = lm.create("organism:runs/tiny")  # a checkpoint you trained  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.lm.base import TokenMonitor
from thinktwice.lm.threaded import sample_off_loop
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, TokenStat, Usage

__all__ = ["OrganismBackend", "organism_text"]

log = logging.getLogger(__name__)
MAX_TOP_LOGPROBS = 20


def organism_text(prompt: Prompt) -> str:
    """The text the organism continues (see the module docstring)."""
    if prompt.raw is not None:
        text = prompt.raw
    else:
        users = [m.content for m in prompt.messages if m.role == "user"]
        if not users:
            raise ConfigError("the organism needs a raw prompt or a user message")
        text = users[-1]
    if not text.endswith("\n"):
        text = text.rstrip() + "\n"
    return text + prompt.assistant_prefix


class OrganismBackend:
    """Samples from an organism checkpoint (``path``: a ``.pt`` file or a training directory;
    None = the checkpoint shipped in the package). ``device``: ``"cpu"`` or ``"cuda"``;
    ``seed`` draws the seeds of calls that give none; ``threads`` sets torch's CPU threads (a
    process-wide setting; 1 is fastest for this model's small matrices and avoids the large
    slowdown of spinning threads on a busy machine; None leaves torch's setting alone)."""

    name = "organism"

    def __init__(self, path: str | Path | None = None, *, device: str = "cpu", seed: int = 0,
                 threads: int | None = 1, model: str | None = None) -> None:
        from thinktwice.organism.checkpoint import resolve

        self.path = resolve(path)
        self.device = device
        self.threads = threads
        self.model = model or ("organism-" + (self.path.parent.name if self.path.name == "model.pt"
                                              else self.path.stem))
        self.capabilities = Capabilities(
            logprobs=True, top_logprobs=MAX_TOP_LOGPROBS, full_vocab=True, native_n=True,
            prefix_sharing=True, continuation=True, monitor=True,
        )
        self._seeds = random.Random(seed)
        self._lock = threading.Lock()
        self._ckpt: Any = None

    def _load(self) -> Any:
        if self._ckpt is None:
            import torch

            from thinktwice.organism.checkpoint import load

            if self.threads:
                torch.set_num_threads(self.threads)
            self._ckpt = load(self.path, self.device)
            log.info("loaded organism %s (%d params)", self.path, self._ckpt.model.num_params())
        return self._ckpt

    @property
    def tokenizer(self) -> Any:
        return self._load().tokenizer

    def _ids(self, prompt: Prompt) -> list[int]:
        tok = self._load().tokenizer
        return [tok.eos_id, *tok.encode(organism_text(prompt))]  # <eos> opens a document

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact prompt length in tokens (the leading ``<eos>`` included)."""
        with self._lock:
            return len(self._ids(prompt))

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        return await sample_off_loop(asyncio.to_thread, self._sample_sync, prompt, params, n, monitor,
                                     lambda: self._seeds.randrange(2**31 - 1))

    def _sample_sync(self, prompt: Prompt, params: SamplingParams, n: int, base: int,
                     monitor: TokenMonitor | None, cancel: threading.Event) -> list[Sample]:
        from thinktwice.organism.generate import RawStat, generate

        with self._lock:
            t0 = time.perf_counter()
            ckpt = self._load()
            tok = ckpt.tokenizer
            ids = self._ids(prompt)
            k = min(params.top_logprobs, MAX_TOP_LOGPROBS)

            def to_stat(r: RawStat) -> TokenStat:
                return TokenStat(token=tok.token(r.token), logprob=r.logprob,
                                 top=tuple((tok.token(t), lp) for t, lp in r.top),
                                 entropy=r.entropy, self_certainty=r.self_certainty)

            mon = None
            if monitor is not None:
                def mon(i: int, pos: int, r: RawStat) -> bool:
                    return monitor(i, pos, to_stat(r))

            gens = generate(ckpt.model, tok, ids, n, temperature=params.temperature, top_p=params.top_p,
                            top_k=params.top_k, min_p=params.min_p, max_tokens=params.max_tokens, seed=base,
                            top_logprobs=k, stats=params.logprobs, stop=params.stop, monitor=mon,
                            cancel=cancel.is_set)
            seconds = time.perf_counter() - t0
        out = []
        for i, g in enumerate(gens):
            first = i == 0
            out.append(Sample(
                text=g.text,
                tokens=tuple(to_stat(r) for r in g.stats) if params.logprobs else None,
                finish_reason=g.finish,
                usage=Usage(calls=int(first), prompt_tokens=len(ids) if first else 0,
                            cached_prompt_tokens=0, completion_tokens=len(g.ids),
                            seconds=seconds if first else 0.0),
                model=self.model,
                seed=base + i,
            ))
        return out

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:  # waits for a call in progress
            self._ckpt = None
