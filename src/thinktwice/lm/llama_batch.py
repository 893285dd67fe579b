"""A llama.cpp decode engine: one context, a prompt cache in sequence 0, and N samples decoded together.

The prompt is evaluated once into KV sequence 0 (reusing the longest common token prefix with the
previous call), copied to sequences 1..``max_batch``, and every active sequence advances one token per
``llama_decode`` step. Finished sequences leave the batch and their slot takes the next waiting sample
(continuous batching), whose first token comes from a saved copy of the prompt's last logits row.
Statistics and sampling read the logits rows in place (zero-copy numpy views; see ``vocab_stats``).
Blocking and not thread-safe: the async backend serialises calls.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thinktwice.errors import BackendError, ContextLengthExceeded
from thinktwice.lm.vocab_stats import SamplerConfig, row_stats, sample_row, shift_row
from thinktwice.types import TokenStat

__all__ = ["LlamaEngine", "SeqResult", "SeqSpec", "silence_llama_logs"]

log = logging.getLogger(__name__)

StepMonitor = Callable[[int, int, TokenStat], bool]


def _no_log(level: int, text: bytes, user_data: Any) -> None:
    return None


_callback_ref: list[Any] = []  # keeps the ctypes callback alive for as long as llama.cpp may call it


def silence_llama_logs() -> None:
    """Route llama.cpp's own logging to a no-op (it otherwise writes to stderr)."""
    import llama_cpp

    if not _callback_ref:
        _callback_ref.append(llama_cpp.llama_log_callback(_no_log))
    llama_cpp.llama_log_set(_callback_ref[0], ctypes.c_void_p(0))


@dataclass(frozen=True, slots=True)
class SeqSpec:
    """One sequence to generate: its RNG seed, stop strings and token limit."""

    seed: int
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class SeqResult:
    """What one sequence produced: text, token ids, per-token statistics and why it stopped."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    stats: list[TokenStat] | None = None
    finish_reason: str = "length"


@dataclass(slots=True)
class _Live:
    index: int
    spec: SeqSpec
    rng: np.random.Generator
    result: SeqResult
    decoder: Any
    stop_len: int
    slot: int = -1
    last: int = -1  # the sampled token waiting to be decoded


class LlamaEngine:
    """Owns a llama.cpp model and context. ``n_ctx`` is the context of each sequence."""

    def __init__(self, path: str, *, n_ctx: int = 4096, n_threads: int = 2, max_batch: int = 16,
                 n_batch: int = 512, flash_attn: bool = True,
                 extra_bufts: bool = False) -> None:
        import llama_cpp

        self._ll = ll = llama_cpp
        silence_llama_logs()
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.load_mode = ll.LLAMA_LOAD_MODE_MMAP
        # The AMX "extra buffer" repack of Q4_1 weights crashes llama_decode on multi-token batches in
        # llama-cpp-python 0.3.36 (Xeon with AMX); plain CPU buffers are safe everywhere.
        mparams.use_extra_bufts = extra_bufts
        self.model = ll.llama_model_load_from_file(path.encode(), mparams)
        if not self.model:
            raise BackendError(f"llama.cpp could not load the GGUF file {path!r}", backend="llamacpp")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.n_ctx = n_ctx
        self.max_batch = max_batch
        self.n_batch = max(n_batch, max_batch)
        cparams = ll.llama_context_default_params()
        cparams.n_seq_max = max_batch + 1  # sequence 0 holds the prompt, 1..max_batch generate
        cparams.n_ctx = n_ctx * (max_batch + 1)  # kv_unified off: each sequence gets n_ctx cells
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        if not flash_attn:
            cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            ll.llama_model_free(self.model)
            raise BackendError("llama.cpp could not create a context (out of memory?)", backend="llamacpp")
        self.mem = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._cached: list[int] = []  # tokens held in sequence 0
        self._closed = False

    # -- vocabulary ---------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        if not special and token in self._pieces:
            return self._pieces[token]
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        out = buf.raw[:n]
        if not special:
            self._pieces[token] = out
        return out

    def token_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self.vocab, token))

    def special_text(self, which: str) -> str:
        """The text of the BOS or EOS token ("" when the model has none)."""
        fn = self._ll.llama_vocab_bos if which == "bos" else self._ll.llama_vocab_eos
        tok = int(fn(self.vocab))
        return "" if tok < 0 else self.piece(tok, special=True).decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        raw = self._ll.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    # -- decoding -----------------------------------------------------------------------------------
    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq_id, want_logits) items in one llama_decode call."""
        b = self.batch
        for i, (tok, pos, seq, want) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = want
        b.n_tokens = len(items)
        rc = self._ll.llama_decode(self.ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc}", backend="llamacpp")

    def _rows(self, n: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))

    def prefill(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """Put ``tokens`` in sequence 0, reusing the common prefix with what it holds.

        Returns a copy of the last position's logits and how many prompt tokens were reused.
        """
        if not tokens:
            raise BackendError("cannot generate from an empty prompt", backend="llamacpp")
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceeded(
                f"prompt has {len(tokens)} tokens; the context holds {self.n_ctx} per sequence",
                backend="llamacpp")
        old = self._cached
        limit = min(len(old), len(tokens) - 1)  # the last token is always re-decoded for its logits
        common = 0
        while common < limit and old[common] == tokens[common]:
            common += 1
        ok = self._ll.llama_memory_seq_rm(self.mem, 0, common, -1)
        if not ok:
            self._ll.llama_memory_seq_rm(self.mem, 0, -1, -1)
            common = 0
        self._cached = []
        pos = common
        while pos < len(tokens):
            end = min(pos + self.n_batch, len(tokens))
            self._decode([(tokens[p], p, 0, p == len(tokens) - 1) for p in range(pos, end)])
            pos = end
        self._cached = list(tokens)
        return self._rows(1)[0].copy(), common

    def clear_cache(self) -> None:
        """Forget the cached prompt (the next call evaluates its prompt from scratch)."""
        self._ll.llama_memory_clear(self.mem, True)
        self._cached = []

    def teacher_force(self, prompt: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """Logits (float32, shape ``(len(continuation), n_vocab)``) that predicted each continuation
        token, decoding one token per step as generation does (so the numbers match it exactly)."""
        row, _ = self.prefill(prompt)
        out = np.empty((len(continuation), self.n_vocab), dtype=np.float32)
        if len(continuation):
            out[0] = row
        slot = 1
        self._ll.llama_memory_seq_rm(self.mem, slot, -1, -1)
        self._ll.llama_memory_seq_cp(self.mem, 0, slot, -1, -1)
        try:
            for i, tok in enumerate(continuation[:-1]):
                self._decode([(tok, len(prompt) + i, slot, True)])
                out[i + 1] = self._rows(1)[0]
        finally:
            self._ll.llama_memory_seq_rm(self.mem, slot, -1, -1)
        return out

    def generate(self, tokens: Sequence[int], specs: Sequence[SeqSpec], sampler: SamplerConfig, *,
                 stats_k: int | None, monitor: StepMonitor | None = None,
                 cancel: threading.Event | None = None) -> tuple[list[SeqResult], int]:
        """Generate one sequence per spec from the prompt ``tokens``.

        ``stats_k`` None skips statistics; otherwise each token gets a TokenStat with that many
        alternatives. Returns the results (in spec order) and the number of reused prompt tokens.
        """
        prompt_row, cached = self.prefill(tokens)
        n_prompt = len(tokens)
        live = [self._new_live(i, s, stats_k is not None) for i, s in enumerate(specs)]
        waiting = deque(x for x in live if x.spec.max_tokens > 0)
        free = list(range(self.max_batch, 0, -1))
        active: list[_Live] = []
        try:
            while waiting or active:
                if cancel is not None and cancel.is_set():
                    break
                while waiting and free:  # join: share the prompt's KV, first token from its logits
                    x = waiting.popleft()
                    x.slot = free.pop()
                    self._ll.llama_memory_seq_rm(self.mem, x.slot, -1, -1)
                    self._ll.llama_memory_seq_cp(self.mem, 0, x.slot, -1, -1)
                    if self._step(x, prompt_row, sampler, stats_k, monitor, n_prompt):
                        active.append(x)
                    else:
                        self._release(x, free)
                if not active:
                    continue
                self._decode([(x.last, n_prompt + len(x.result.token_ids) - 1, x.slot, True) for x in active])
                rows = self._rows(len(active))
                still = []
                for r, x in enumerate(active):
                    if self._step(x, rows[r], sampler, stats_k, monitor, n_prompt):
                        still.append(x)
                    else:
                        self._release(x, free)
                active = still
        finally:
            for x in active:
                self._release(x, free)
        for x in live:
            x.result.text += x.decoder.decode(b"", final=True)
        return [x.result for x in live], cached

    def _new_live(self, i: int, spec: SeqSpec, with_stats: bool) -> _Live:
        rng = np.random.Generator(np.random.PCG64(spec.seed))
        res = SeqResult(stats=[] if with_stats else None)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return _Live(i, spec, rng, res, dec, max((len(s) for s in spec.stop), default=0))

    def _release(self, x: _Live, free: list[int]) -> None:
        if x.slot > 0:
            self._ll.llama_memory_seq_rm(self.mem, x.slot, -1, -1)
            free.append(x.slot)
            x.slot = -1

    def _step(self, x: _Live, row: np.ndarray, sampler: SamplerConfig, stats_k: int | None,
              monitor: StepMonitor | None, n_prompt: int) -> bool:
        """Sample the next token of ``x`` from its logits row; False when the sequence has finished."""
        sh = shift_row(row, full=stats_k is not None or monitor is not None or sampler.temperature > 0)
        tok = sample_row(sh, sampler, x.rng)
        res = x.result
        if self.is_eog(tok):
            res.finish_reason = "stop"
            return False
        piece = self.piece(tok)
        text = x.decoder.decode(piece)
        res.token_ids.append(tok)
        before = len(res.text)
        res.text += text
        stat = None
        if stats_k is not None:
            st = row_stats(sh, tok, stats_k)
            top = tuple((self.token_text(t), lp) for t, lp in zip(st.top_ids, st.top_logprobs))
            stat = TokenStat(text, st.logprob, top, st.entropy, st.self_certainty)
            res.stats.append(stat)  # type: ignore[union-attr]
        if x.stop_len:
            start = max(0, before - x.stop_len + 1)
            hits = [i for i in (res.text.find(s, start) for s in x.spec.stop) if i >= 0]
            if hits:
                res.text = res.text[: min(hits)]
                x.decoder.reset()  # bytes after the stop string are dropped
                res.finish_reason = "stop"
                return False
        if monitor is not None:
            if stat is None:
                st = row_stats(sh, tok, 0)
                stat = TokenStat(text, st.logprob, (), st.entropy, st.self_certainty)
            if monitor(x.index, len(res.token_ids) - 1, stat):
                res.finish_reason = "monitor"
                return False
        if len(res.token_ids) >= x.spec.max_tokens or n_prompt + len(res.token_ids) >= self.n_ctx:
            res.finish_reason = "length"
            return False
        x.last = tok
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ll.llama_batch_free(self.batch)
        self._ll.llama_free(self.ctx)
        self._ll.llama_model_free(self.model)
