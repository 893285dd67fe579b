"""A small decoder-only transformer (GPT-2 style, after nanoGPT) with a KV cache for sampling.

Pre-norm blocks of causal self-attention and a GELU MLP, learned positions, tied input/output
embeddings, no dropout and no biases (the data are clean and synthetic). Shapes: B batch,
T time, C model width, H heads, D = C / H head width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thinktwice.errors import ConfigError

__all__ = ["GPT", "GPTConfig", "KVCache"]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 160  # set from the tokenizer
    block_size: int = 256  # longest sequence: a 5-step question plus its solution is ~130 tokens
    n_layer: int = 4
    n_head: int = 6
    n_embd: int = 192  # 1.8M parameters at 4 layers: the smallest width that learned 5-step sums

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head) < 1:
            raise ConfigError("GPTConfig sizes must be >= 1")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class KVCache:
    """Per-layer keys and values of the sequence so far: each (B, H, T, D)."""

    def __init__(self, n_layer: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        k = self.k[0]
        return 0 if k is None else int(k.shape[2])

    def expand(self, n: int) -> KVCache:
        """The cache of a batch-1 prompt repeated for ``n`` sequences (shared prefix)."""
        out = KVCache(len(self.k))
        out.k = [None if k is None else k.expand(n, -1, -1, -1).contiguous() for k in self.k]
        out.v = [None if v is None else v.expand(n, -1, -1, -1).contiguous() for v in self.v]
        return out

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the sequences in ``rows`` (finished ones are dropped)."""
        self.k = [None if k is None else k[rows] for k in self.k]
        self.v = [None if v is None else v[rows] for v in self.v]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        past = 0
        if cache is not None:
            pk, pv = cache.k[layer], cache.v[layer]
            if pk is not None and pv is not None:
                past = pk.shape[2]
                k = torch.cat([pk, k], dim=2)  # (B, H, past+T, D)
                v = torch.cat([pv, v], dim=2)
            cache.k[layer], cache.v[layer] = k, v
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # new queries see every cached position and the causal part of the new ones
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.out = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """The organism's language model. ``forward(idx)`` gives logits (B, T, V)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        _, T = idx.shape  # (B, T)
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ConfigError(f"sequence of {start + T} tokens exceeds the block size {self.cfg.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        x = self.ln_f(x)
        return x @ self.wte.weight.T  # tied weights: (B, T, V)
