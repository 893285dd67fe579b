"""HFBackend: any transformers causal LM in-process, on CPU or CUDA, with no server and no downloads.

``n`` samples share one prompt prefill (its KV cache is repeated along the batch) and decode together
one step at a time; exact full-vocabulary token statistics (chosen logprob, entropy, self-certainty
after Kang et al., arXiv 2502.18581, top-k) come from the logits that sampled each token, computed on
the device in the same pass (see :mod:`thinktwice.lm.hf_decode`). With the model in-process the
latent layer is visible too: :meth:`HFBackend.hidden_states` and :meth:`HFBackend.logit_lens` run one
teacher-forced forward pass over prompt + completion (an extra prefill; signals charge it to the Meter).

>>> from thinktwice import lm
>>> backend = lm.create("hf:path/to/Qwen2.5-0.5B-Instruct", device="cuda")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError, ContextLengthExceeded
from thinktwice.lm.base import TokenMonitor
from thinktwice.lm.hf_latent import HiddenStates, LensResult
from thinktwice.lm.hf_seq import SeqState, TokenTexts
from thinktwice.lm.threaded import sample_off_loop
from thinktwice.lm.vocab_stats import SamplerConfig
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, Usage

__all__ = ["HFBackend", "HiddenStates", "LensResult"]

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20
_DEVICES = ("auto", "cpu", "cuda")
_DTYPES = ("auto", "bf16", "fp16", "fp32")
_LENS_CACHE = 256  # logit-lens results kept, keyed by (prompt, completion, offset)


class HFBackend:
    """A transformers causal LM loaded from a local directory (``local_files_only`` always).

    Args:
        path: a directory with ``config.json``, weights and a tokenizer (``save_pretrained`` layout).
        device: "auto" (CUDA when available), "cpu" or "cuda" (or "cuda:N").
        dtype: "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp16" or "fp32".
        max_batch: sequences decoded together; a call with more samples runs in batches that reuse
            the prompt's KV cache.
        top_k_stats: alternatives per token when ``SamplingParams.top_logprobs`` is 0.
        seed: draws the per-call seeds of calls whose ``SamplingParams.seed`` is None.
        model: display name (default: the directory name).
        trust_remote_code: passed to transformers (off by default).
        sync_every: decode steps between host syncs (stop strings, EOS and the monitor are checked
            there; results do not depend on it).
        threads: torch CPU threads (default: torch's).
        cudnn_attention: let SDPA pick cuDNN attention on CUDA (False restricts it to flash /
            memory-efficient / math kernels).
        compile: fuse each decode step's sampling and statistics with ``torch.compile`` ("auto": on
            CUDA only; the first call of a new sampler setting pays the compile, tens of seconds). Off
            by default: torch 2.11's inductor failed on the vocabulary-wide cumsum on an H100 (the
            step then falls back to eager with a warning).
    """

    name = "hf"

    def __init__(
        self,
        path: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 16,
        top_k_stats: int = 5,
        seed: int = 0,
        model: str | None = None,
        trust_remote_code: bool = False,
        sync_every: int = 16,
        threads: int | None = None,
        cudnn_attention: bool = True,
        compile: bool | str = False,
    ) -> None:
        if path is None:
            raise ConfigError("the hf backend needs a model directory: --backend hf:PATH")
        if not (device in _DEVICES or device.startswith("cuda:")):
            raise ConfigError(f"device must be one of {', '.join(_DEVICES)} or cuda:N; got {device!r}")
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
        if max_batch < 1 or sync_every < 1:
            raise ConfigError(f"max_batch and sync_every must be >= 1, got {max_batch}, {sync_every}")
        if not 0 <= top_k_stats <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"top_k_stats must be in [0, {MAX_TOP_LOGPROBS}], got {top_k_stats}")
        if not Path(path).is_dir():
            raise ConfigError(f"model directory not found: {path}")
        self.path = Path(path)
        self.device_name = device
        self.dtype_name = dtype
        self.max_batch = max_batch
        self.top_k_stats = top_k_stats
        self.trust_remote_code = trust_remote_code
        self.sync_every = sync_every
        self.threads = threads
        self.cudnn_attention = cudnn_attention
        if compile not in (True, False, "auto"):
            raise ConfigError(f"compile must be true, false or 'auto'; got {compile!r}")
        self.compile = compile
        self._stepper: Any = None
        self.model = model or self.path.name
        self.capabilities = Capabilities(
            logprobs=True, top_logprobs=MAX_TOP_LOGPROBS, full_vocab=True, native_n=True,
            prefix_sharing=True, continuation=True, monitor=True, hidden_states=True,
        )
        self._seeds = random.Random(seed)
        self._lock = threading.Lock()  # one model: callers take turns
        # one long-lived worker thread: CUDA libraries keep per-thread handles and plan caches, and a
        # fresh thread per call (asyncio.to_thread) made decoding 3-5x slower on an H100
        self._pool: ThreadPoolExecutor | None = None
        self._lm: Any = None
        self._tok: Any = None
        self._texts: TokenTexts | None = None
        self._eos: frozenset[int] = frozenset()
        self._lens: OrderedDict[tuple[Prompt, str, int], LensResult] = OrderedDict()  # recent logit-lens results

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str = "in-memory", **options: Any) -> HFBackend:
        """Wrap an already-built transformers model and tokenizer (tests, benchmarks, notebooks)."""
        self = cls.__new__(cls)
        cls.__init__(self, ".", model=name, **options)
        self.path = Path(name)
        self._attach(model, tokenizer)
        return self

    # -- loading ------------------------------------------------------------------------------------
    def _load(self) -> Any:
        if self._lm is None:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.threads:
                torch.set_num_threads(self.threads)
            t0 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True,
                                                trust_remote_code=self.trust_remote_code)
            major = int(transformers.__version__.split(".")[0])
            dkey = "dtype" if major >= 5 else "torch_dtype"
            model = AutoModelForCausalLM.from_pretrained(
                self.path, local_files_only=True, trust_remote_code=self.trust_remote_code,
                **{dkey: self._torch_dtype()})
            self._attach(model, tok)
            log.info("loaded %s on %s in %.2fs", self.path, self.device, time.perf_counter() - t0)
        return self._lm

    def _torch_dtype(self) -> Any:
        import torch

        name = self.dtype_name
        if name == "auto":
            name = "bf16" if str(self._device()).startswith("cuda") else "fp32"
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]

    def _device(self) -> Any:
        import torch

        if self.device_name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device_name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for but torch sees no CUDA device")
        return torch.device(self.device_name)

    def _attach(self, model: Any, tokenizer: Any) -> None:
        dev = self._device()
        if self.dtype_name != "auto" or next(model.parameters()).device != dev:
            model = model.to(device=dev, dtype=self._torch_dtype())
        model.eval()
        self._lm = model
        self._tok = tokenizer
        self._texts = TokenTexts(tokenizer)
        eos: set[int] = set()
        for src in (getattr(model, "generation_config", None), model.config, tokenizer):
            v = getattr(src, "eos_token_id", None)
            eos.update([v] if isinstance(v, int) else (v or []))
        self._eos = frozenset(int(e) for e in eos)

    @property
    def device(self) -> Any:
        return next(self._load().parameters()).device

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tok

    @property
    def hf_model(self) -> Any:
        """The loaded transformers model (loads on first access; blocking)."""
        return self._load()

    # -- prompts ------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """The prompt text and whether the tokenizer should add its special tokens: the tokenizer's
        chat template when it has one, else the messages' contents joined by blank lines."""
        tok = self._tok
        if prompt.raw is not None:
            return prompt.raw + prompt.assistant_prefix, True
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return text + prompt.assistant_prefix, False
        return "\n\n".join(m["content"] for m in msgs) + "\n\n" + prompt.assistant_prefix, True

    def _ids(self, prompt: Prompt) -> list[int]:
        self._load()
        text, special = self.render(prompt)
        return list(self._tok(text, add_special_tokens=special)["input_ids"])

    def prompt_tokens(self, prompt: Prompt) -> list[int]:
        """The token ids the model sees for ``prompt``."""
        with self._lock:
            return self._ids(prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact prompt length in tokens (chat template applied)."""
        return len(self.prompt_tokens(prompt))

    # -- sampling -----------------------------------------------------------------------------------
    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        return await sample_off_loop(self._run, self._sample_sync, prompt, params, n, monitor,
                                     lambda: self._seeds.randrange(2**31 - 1))

    def _sample_sync(self, prompt: Prompt, params: SamplingParams, n: int, base: int,
                     monitor: TokenMonitor | None, cancel: threading.Event) -> list[Sample]:
        import torch

        from thinktwice.lm.hf_decode import DecodeSpec, decode, prefill

        with self._lock, torch.inference_mode(), self._attention():
            t0 = time.perf_counter()
            model = self._load()
            ids = self._ids(prompt)
            room = self.context_length - len(ids)
            if room <= 0:
                raise ContextLengthExceeded(f"the prompt has {len(ids)} tokens; {self.model} takes "
                                            f"{self.context_length}")
            max_tokens = min(params.max_tokens, room)  # a full context ends the sequence with "length"
            k = min(params.top_logprobs or self.top_k_stats, MAX_TOP_LOGPROBS)
            want_stats = params.logprobs or monitor is not None
            sampler = SamplerConfig(params.temperature, params.top_k, params.top_p, params.min_p)
            assert self._texts is not None
            states = [SeqState(i, max_tokens, tuple(params.stop), self._eos, self._texts,
                               with_stats=params.logprobs, monitor=monitor) for i in range(n)]
            if max_tokens > 0:
                cache, last = prefill(model, ids, self.device)
                for lo in range(0, n, self.max_batch):
                    hi = min(n, lo + self.max_batch)
                    group = states[lo:hi]

                    def sink(rows: np.ndarray, toks: np.ndarray, fs: np.ndarray | None, tops: np.ndarray | None,
                             group: Sequence[SeqState] = group) -> np.ndarray:
                        return np.array([group[r].feed(toks[j], None if fs is None else fs[j],
                                                       None if tops is None else tops[j])
                                         for j, r in enumerate(rows)], dtype=bool)

                    spec = DecodeSpec(seeds=[base + i for i in range(lo, hi)], sampler=sampler,
                                      max_tokens=max_tokens, stats_k=k if want_stats else None,
                                      sync_every=self.sync_every)
                    decode(model, cache, last, spec, sink, keep_cache=hi < n, cancelled=cancel.is_set,
                           stepper=self._get_stepper())
            seconds = time.perf_counter() - t0
        out = []
        for i, st in enumerate(states):
            first = i == 0
            out.append(Sample(
                text=st.text(),
                tokens=st.stats() if params.logprobs else None,
                finish_reason=st.finish or "length",
                usage=Usage(calls=int(first), prompt_tokens=len(ids) if first else 0,
                            completion_tokens=len(st.ids), seconds=seconds if first else 0.0),
                model=self.model,
                seed=base + i,
            ))
        return out

    # -- latent layer -------------------------------------------------------------------------------
    async def hidden_states(self, prompt: Prompt, completion: str, layers: Sequence[int] | None = None,
                            positions: Sequence[int] | None = None) -> HiddenStates:
        """Hidden states of ``completion`` after ``prompt`` from one teacher-forced forward pass.

        ``layers`` index ``output_hidden_states`` (0 = embeddings, ``n_layers`` = final, normed);
        default all. ``positions`` are completion-token indices (negative from the end); default all.
        Cost: one prefill of prompt + completion (``HiddenStates.prompt_tokens``), no generation.
        """
        from thinktwice.lm.hf_latent import hidden_states

        return await self._run(self._locked, hidden_states, prompt, completion, layers, positions)  # type: ignore[no-any-return]

    async def logit_lens(self, prompt: Prompt, completion: str, char_offset: int) -> LensResult:
        """Logit lens (nostalgebraist 2020; Belrose et al., arXiv 2303.08112 for the tuned variant) at
        the completion token covering ``char_offset``: every layer's hidden state at the position that
        predicts it, through the final norm and the LM head. Same cost as :meth:`hidden_states`."""
        from thinktwice.lm.hf_latent import logit_lens

        key = (prompt, completion, char_offset)
        hit = self._lens.get(key)
        if hit is not None:  # e.g. logit-lens and logit-lens-stability on the same candidate
            self._lens.move_to_end(key)
            return dataclasses.replace(hit, cached=True)
        res = await self._run(self._locked, logit_lens, prompt, completion, char_offset)
        self._lens[key] = res
        if len(self._lens) > _LENS_CACHE:
            self._lens.popitem(last=False)
        return res  # type: ignore[no-any-return]

    def _get_stepper(self) -> Any:
        if self._stepper is None:
            from thinktwice.lm.hf_decode import Stepper

            on = self.device.type == "cuda" if self.compile == "auto" else bool(self.compile)
            self._stepper = Stepper(compile=on)
        return self._stepper

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thinktwice-hf")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _attention(self) -> Any:
        """With ``cudnn_attention=False`` on CUDA, SDPA without the cuDNN kernel (whose execution plans
        are built per sequence length and cached per thread)."""
        if self.cudnn_attention or self.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _locked(self, fn: Any, *args: Any) -> Any:
        import torch

        with self._lock, torch.inference_mode(), self._attention():
            self._load()
            return fn(self, *args)

    @property
    def context_length(self) -> int:
        """Positions the model takes (``max_position_embeddings``; prompt plus generated tokens)."""
        cfg = self._load().config
        cfg = getattr(cfg, "get_text_config", lambda: cfg)()
        return int(getattr(cfg, "max_position_embeddings", None) or 2**31 - 1)

    @property
    def n_layers(self) -> int:
        """Transformer blocks (``output_hidden_states`` has ``n_layers + 1`` entries)."""
        cfg = self._load().config
        cfg = getattr(cfg, "get_text_config", lambda: cfg)()
        return int(cfg.num_hidden_layers)

    async def aclose(self) -> None:
        with self._lock:
            self._lm = None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
