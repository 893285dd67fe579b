"""The batched decode loop of the ``hf`` backend: N sequences share one prompt prefill, every step
samples all of them in one forward pass, and exact full-vocabulary token statistics come from the
same logits (chosen logprob, entropy, self-certainty after Kang et al., arXiv 2502.18581, top-k).

Everything per step stays on the device; the host sees the tokens and statistics once every
``sync_every`` steps (one small copy), where end-of-sequence, stop strings, the token monitor and
cancellation are checked. A sequence that finished inside a chunk simply keeps decoding until the
next sync (its extra tokens are dropped): its own draws never influence another sequence, so the
results are exactly those of a per-token check. Finished sequences are compacted out of the batch
once they are at least half of it. Sampling draws one uniform per token from a ``torch.Generator``
seeded per sequence, so sample ``i`` with seed ``s`` is the same whatever ``n`` is.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinktwice.lm.vocab_stats import SamplerConfig

log = logging.getLogger(__name__)

__all__ = ["ChunkSink", "DecodeSpec", "Stepper", "cache_kwarg", "decode", "finish_stats", "logits_kwarg", "prefill",
           "raw_stats", "sample_tokens", "step", "token_stats"]

ChunkSink = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]
"""Called at each sync as ``sink(seq_ids, tokens, fstats, top_ids)`` with the active sequences'
original indices (B,), their new tokens (B, S), float stats (B, S, 3 + k: logprob, entropy,
self-certainty, top-k logprobs) and top-k ids (B, S, k) or None; returns a (B,) bool array of
sequences that have finished."""


@dataclass(frozen=True, slots=True)
class DecodeSpec:
    """One batch: per-sequence seeds, the sampler, the token limit and the statistics wanted
    (``stats_k`` = top-k width; None = no statistics)."""

    seeds: Sequence[int]
    sampler: SamplerConfig
    max_tokens: int
    stats_k: int | None = 5
    sync_every: int = 16
    compact: bool = True


def logits_kwarg(model: Any) -> str | None:
    """The forward keyword that limits the logits to the last positions in this transformers version."""
    import inspect

    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def cache_kwarg(model: Any) -> str:
    """The forward keyword of the KV cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


def prefill(model: Any, ids: Sequence[int], device: Any) -> tuple[Any, Any]:
    """Run the prompt once (batch 1): its KV cache and the last position's logits (1, V)."""
    import torch

    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    kw: dict[str, Any] = {}
    name = logits_kwarg(model)
    if name is not None:
        kw[name] = 1
    out = model(input_ids=x, use_cache=True, **kw)
    return _out_cache(out), out.logits[:, -1, :]


def sample_tokens(lf: Any, u: Any, cfg: SamplerConfig) -> Any:
    """Draw one token per row of fp32 logits ``lf`` (B, V) with uniforms ``u`` (B,): top-k, top-p and
    min-p on the untempered distribution (llama.cpp's order, as :mod:`thinktwice.lm.vocab_stats`),
    then temperature, then the inverse CDF. ``temperature == 0`` is argmax."""
    import torch

    if cfg.temperature == 0:
        return lf.argmax(-1)
    x = lf
    v = x.shape[-1]
    if 0 < cfg.top_k < v:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, -math.inf)
    if cfg.top_p < 1:
        srt, idx = torch.sort(x, dim=-1, descending=True)
        p = torch.softmax(srt, dim=-1)
        before = torch.cumsum(p, dim=-1) - p  # mass strictly above each token: keep the crossing token
        srt = srt.masked_fill(before >= cfg.top_p, -math.inf)
        x = torch.full_like(x, -math.inf).scatter(-1, idx, srt)
    if cfg.min_p > 0:
        top = x.max(dim=-1, keepdim=True).values
        x = x.masked_fill(x - top < math.log(cfg.min_p), -math.inf)
    if cfg.temperature != 1:
        x = x * (1.0 / cfg.temperature)
    cdf = torch.cumsum(torch.softmax(x, dim=-1), dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=v - 1)


def raw_stats(lf: Any, tok: Any, k: int, lp: Any = None) -> tuple[Any, Any | None]:
    """Device half of the token statistics of fp32 logits ``lf`` (B, V) for chosen tokens ``tok`` (B,):
    a float tensor (B, 4 + k) of [log p(chosen), Σ p log p, Σ log p over finite entries, number of
    finite entries, top-k logprobs] and the top-k ids (B, k) or None. :func:`finish_stats` turns it
    into the statistics on the host (the (B, 1)-sized arithmetic costs kernel launches, not math)."""
    import torch

    if lp is None:
        lp = torch.log_softmax(lf, dim=-1)
    fin = torch.isfinite(lp)
    parts = [
        lp.gather(1, tok.unsqueeze(1)),
        (lp.exp() * lp).nansum(-1, keepdim=True),  # 0 * -inf = NaN at masked entries: skipped
        torch.where(fin, lp, 0.0).sum(-1, keepdim=True),
        fin.sum(-1, keepdim=True, dtype=lp.dtype),
    ]
    ids = None
    if k > 0:
        vals, ids = torch.topk(lp, k, dim=-1)
        parts.append(vals)
    return torch.cat(parts, dim=-1), ids


def finish_stats(raw: np.ndarray) -> np.ndarray:
    """(..., 4 + k) raw columns -> (..., 3 + k): [logprob, entropy, self-certainty, top-k logprobs], with
    self-certainty ``-log V' - (1/V') Σ_j log p_j`` over the V' finite logits (masked ones dropped)."""
    out = np.empty(raw.shape[:-1] + (raw.shape[-1] - 1,), dtype=np.float64)
    out[..., 0] = raw[..., 0]
    out[..., 1] = np.maximum(-raw[..., 1].astype(np.float64), 0.0)
    nfin = raw[..., 3].astype(np.float64)
    out[..., 2] = -np.log(nfin) - raw[..., 2] / nfin
    out[..., 3:] = raw[..., 4:]
    return out


def token_stats(lf: Any, tok: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Statistics (B, 3 + k) as :func:`finish_stats` gives them, and the top-k ids (host arrays)."""
    raw, ids = raw_stats(lf, tok, k)
    return finish_stats(raw.cpu().numpy()), (None if ids is None else ids.cpu().numpy())


def step(lf: Any, u: Any, sampler: SamplerConfig, k: int | None) -> tuple[Any, Any | None, Any | None]:
    """One decode step on fp32 logits: the sampled tokens, and with ``k`` not None the raw statistics.
    Plain sampling (temperature 1, no filters) shares ``exp(log_softmax)`` between the two."""
    import torch

    if k is None:
        return sample_tokens(lf, u, sampler), None, None
    lp = torch.log_softmax(lf, dim=-1)
    if sampler.temperature == 1 and not sampler.is_filtered:
        cdf = torch.cumsum(lp.exp(), dim=-1)
        tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1).clamp_(max=lf.shape[-1] - 1)
    else:
        tok = sample_tokens(lf, u, sampler)
    raw, ids = raw_stats(lf, tok, k, lp)
    return tok, raw, ids


class Stepper:
    """:func:`step` per (sampler, k), optionally through ``torch.compile`` (fused kernels: fewer launches
    per token); a compile failure logs a warning and falls back to eager for good."""

    def __init__(self, compile: bool = False) -> None:
        self.compile = compile
        self._fns: dict[tuple[SamplerConfig, int | None], Callable[..., Any]] = {}

    def __call__(self, lf: Any, u: Any, sampler: SamplerConfig, k: int | None) -> tuple[Any, Any | None, Any | None]:
        key = (sampler, k)
        fn = self._fns.get(key)
        if fn is None:
            fn = functools.partial(step, sampler=sampler, k=k)
            if self.compile:
                import torch

                compiled = torch.compile(fn, dynamic=None)
                try:
                    out = compiled(lf, u)
                except Exception as e:  # noqa: BLE001 - any compiler failure: eager is always correct
                    log.warning("torch.compile of the decode step failed (%s); running eager", e)
                    self.compile = False
                else:
                    self._fns[key] = compiled
                    return out  # type: ignore[no-any-return]
            self._fns[key] = fn
        return fn(lf, u)  # type: ignore[no-any-return]


def _uniforms(seeds: Sequence[int], steps: int, device: Any) -> Any:
    """(B, steps) uniforms, row ``i`` from a CPU generator seeded with ``seeds[i]`` (device-independent)."""
    import torch

    rows = []
    for s in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(s))
        rows.append(torch.rand(steps, generator=g, dtype=torch.float64))
    return torch.stack(rows).to(device=device, dtype=torch.float32)


def decode(model: Any, cache: Any, last_logits: Any, spec: DecodeSpec, sink: ChunkSink, *,
           keep_cache: bool = False, cancelled: Callable[[], bool] | None = None,
           stepper: Stepper | None = None) -> int:
    """Decode ``len(spec.seeds)`` sequences from a batch-1 prompt ``cache`` and its ``last_logits``.

    ``keep_cache`` copies the prompt cache first (to reuse it for another batch). Returns the number
    of decode steps run. Call under ``torch.inference_mode()``.
    """
    import torch

    stepper = stepper or Stepper()
    b = len(spec.seeds)
    if b == 0 or spec.max_tokens == 0:
        return 0
    if keep_cache:
        cache = copy.deepcopy(cache)
    if b > 1:
        cache.batch_repeat_interleave(b)
    device = last_logits.device
    logits = last_logits.expand(b, -1)
    greedy = spec.sampler.temperature == 0
    u = None if greedy else _uniforms(spec.seeds, spec.max_tokens, device)
    k = spec.stats_k
    sync = max(1, spec.sync_every)
    seq_ids = np.arange(b)
    tok_buf = torch.empty((b, sync), dtype=torch.long, device=device)
    f_buf = torch.empty((b, sync, 4 + (k or 0)), dtype=torch.float32, device=device) if k is not None else None
    i_buf = torch.empty((b, sync, k), dtype=torch.long, device=device) if k else None
    ckw = cache_kwarg(model)
    steps = 0
    start = 0
    while start < spec.max_tokens:
        width = min(sync, spec.max_tokens - start)
        for j in range(width):
            t = start + j
            tok, raw, ids = stepper(logits.float(), None if u is None else u[:, t], spec.sampler, k)
            tok_buf[:, j] = tok
            if f_buf is not None:
                f_buf[:, j] = raw
                if i_buf is not None:
                    i_buf[:, j] = ids
            steps += 1
            if t + 1 < spec.max_tokens:
                out = model(input_ids=tok.unsqueeze(1), use_cache=True, **{ckw: cache})
                cache = _out_cache(out)
                logits = out.logits[:, -1, :]
        # np.array copies: on CPU .cpu() is the buffer itself, which the next chunk overwrites
        done = sink(
            seq_ids, tok_buf[:, :width].cpu().numpy().copy(),
            None if f_buf is None else finish_stats(f_buf[:, :width].cpu().numpy()),
            None if i_buf is None else i_buf[:, :width].cpu().numpy().copy(),
        )
        start += width
        if done.all() or (cancelled is not None and cancelled()):
            break
        if spec.compact and done.sum() * 2 >= len(done):
            keep = np.flatnonzero(~done)
            sel = torch.as_tensor(keep, device=device)
            cache.batch_select_indices(sel)
            logits = logits.index_select(0, sel)
            u = None if u is None else u.index_select(0, sel)
            seq_ids = seq_ids[keep]
            tok_buf = tok_buf[: len(keep)]
            f_buf = None if f_buf is None else f_buf[: len(keep)]
            i_buf = None if i_buf is None else i_buf[: len(keep)]
    return steps
