"""Batched sampling from the organism with a KV cache and full-vocabulary token statistics.

The prompt is run once at batch 1; its KV cache is expanded to the ``n`` sequences, which then
decode together; finished sequences leave the batch. Sequence ``i`` draws its random numbers from
its own generator seeded with ``seed + i``, so it does not depend on ``n``. Statistics describe the
model's own next-token distribution (before temperature, top-p or top-k): the chosen token's
logprob, the entropy, self-certainty KL(U || p) = -log V - mean_j log p_j (Kang et al., arXiv
2502.18581) and the top-k alternatives.

A sequence stops at ``<eos>``, at the newline that ends a ``#### N`` line, at a stop string, at
``max_tokens`` or when the monitor says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from thinktwice.errors import ConfigError, ContextLengthExceeded
from thinktwice.organism.model import GPT, KVCache
from thinktwice.organism.tokenizer import Tokenizer

__all__ = ["ANSWER_MARK", "Generation", "RawStat", "generate"]

ANSWER_MARK = "####"


@dataclass(frozen=True, slots=True)
class RawStat:
    """One generated token's statistics (ids, not strings)."""

    token: int
    logprob: float
    entropy: float
    self_certainty: float
    top: tuple[tuple[int, float], ...]


@dataclass
class Generation:
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: str = "length"
    stats: list[RawStat] = field(default_factory=list)


Monitor = Callable[[int, int, RawStat], bool]


def _filter(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, min_p: float = 0.0
            ) -> torch.Tensor:
    """Sampling probabilities (B, V) after temperature, top-k, top-p and min-p."""
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, dim=-1, descending=True)
        keep = (sp.cumsum(-1) - sp) < top_p  # always keeps the most likely token
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    if min_p > 0:
        probs = probs * (probs >= min_p * probs.max(-1, keepdim=True).values)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@torch.no_grad()
def generate(
    model: GPT,
    tok: Tokenizer,
    prompt_ids: Sequence[int],
    n: int = 1,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    max_tokens: int = 128,
    seed: int = 0,
    top_logprobs: int = 0,
    stats: bool = True,
    stop: Sequence[str] = (),
    monitor: Monitor | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Generation]:
    """``n`` continuations of ``prompt_ids`` (see the module docstring)."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if not prompt_ids:
        raise ConfigError("the organism needs a non-empty prompt")
    device = next(model.parameters()).device
    room = model.cfg.block_size - len(prompt_ids)
    if room < 1:
        raise ContextLengthExceeded(
            f"prompt of {len(prompt_ids)} tokens leaves no room in the organism's {model.cfg.block_size}-token context",
            backend="organism",
        )
    max_tokens = min(max_tokens, room)
    gens = [Generation() for _ in range(n)]
    if max_tokens == 0:
        return gens
    gens_rng = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(n)]
    vocab_size = model.cfg.vocab_size
    log_v = math.log(vocab_size)
    k_top = min(top_logprobs, vocab_size)

    cache = KVCache(model.cfg.n_layer)
    x = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, Tp)
    logits = model(x, cache)[:, -1, :]  # (1, V)
    cache = cache.expand(n)
    logits = logits.expand(n, -1)  # (n, V)
    active = list(range(n))  # sequence index of each batch row
    texts = [""] * n
    for pos in range(max_tokens):
        if cancel is not None and cancel():
            break
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)  # (B, V)
        if temperature == 0:
            nxt = logits.argmax(-1)  # (B,)
        else:
            probs = _filter(logits, temperature, top_p, top_k, min_p).cpu()
            u = torch.stack([torch.rand(1, generator=gens_rng[i]) for i in active])  # (B, 1)
            cdf = probs.cumsum(-1)
            nxt = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(vocab_size - 1).squeeze(1).to(device)
        rows_stats: list[RawStat | None] = [None] * len(active)
        if stats or monitor is not None:
            chosen = logp.gather(1, nxt[:, None]).squeeze(1)  # (B,)
            ent = -(logp.exp() * logp).sum(-1)  # (B,)
            sc = -log_v - logp.mean(-1)  # (B,)
            tv, ti = (torch.topk(logp, k_top, dim=-1) if k_top else (None, None))
            ch, en, s_ = chosen.tolist(), ent.tolist(), sc.tolist()
            tvl = tv.tolist() if tv is not None else None
            til = ti.tolist() if ti is not None else None
            ids = nxt.tolist()
            for r in range(len(active)):
                top = tuple(zip(til[r], tvl[r])) if til is not None and tvl is not None else ()
                rows_stats[r] = RawStat(ids[r], ch[r], en[r], s_[r], top)
        ids = nxt.tolist()
        keep: list[int] = []
        for r, i in enumerate(active):
            g, t = gens[i], ids[r]
            if t == tok.eos_id:
                g.finish = "stop"
                if rows_stats[r] is not None and stats:  # the eos was generated: it is billed, not shown
                    g.stats.append(rows_stats[r])  # type: ignore[arg-type]
                g.ids.append(t)
                continue
            g.ids.append(t)
            st = rows_stats[r]
            if stats and st is not None:
                g.stats.append(st)
            piece = tok.token(t)
            texts[i] += piece
            if monitor is not None and st is not None and monitor(i, pos, st):
                g.finish = "monitor"
                continue
            if piece == "\n" and ANSWER_MARK in texts[i]:
                texts[i] = texts[i][:-1]
                g.finish = "stop"
                continue
            hit = [texts[i].find(s) for s in stop if s and s in texts[i]]
            if hit:
                texts[i] = texts[i][: min(hit)]
                g.finish = "stop"
                continue
            keep.append(r)
        for i in range(n):
            gens[i].text = texts[i]
        if not keep:
            break
        if len(keep) < len(active):
            rows = torch.tensor(keep, device=device)
            cache.select(rows)
            nxt = nxt[rows]
            active = [active[r] for r in keep]
        if pos + 1 == max_tokens:
            break
        logits = model(nxt[:, None], cache)[:, -1, :]  # (B, V)
    return gens
