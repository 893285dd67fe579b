"""Teacher-forced passes of the ``hf`` backend that read the latent layer: residual-stream hidden states
and the logit lens (nostalgebraist 2020; see Belrose et al., arXiv 2303.08112).

One forward pass over prompt + completion (no generation, no KV cache kept) with forward hooks on the
embedding and on every decoder block. Layer ``l`` is the residual stream after block ``l`` (0 = the
token embeddings, ``n_layers`` = the last block, before the final norm), so the lens of the last layer
equals the model's own next-token distribution. The completion is tokenized on its own after the
prompt's tokens (it may split differently from how it was generated; the text is what counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.types import Prompt

__all__ = ["HiddenStates", "LensResult", "hidden_states", "logit_lens", "model_parts"]


@dataclass(frozen=True, slots=True, eq=False)
class HiddenStates:
    """Hidden states ``states[i, j]`` of layer ``layers[i]`` at completion token ``positions[j]``
    (float32, (len(layers), len(positions), hidden)); ``prompt_tokens`` = tokens in the pass."""

    states: np.ndarray
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    n_completion: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True, eq=False)
class LensResult:
    """The logit lens at one completion token: for layers 1..n_layers, the top-1 token id and the
    logprob of the ``target`` token (the token actually at ``token_index``) from the position before it."""

    top1: np.ndarray
    target_logprob: np.ndarray
    target: int
    token_index: int
    prompt_tokens: int
    cached: bool = False  # True when the backend answered from its cache: no forward pass was run

    @property
    def n_layers(self) -> int:
        return int(self.top1.shape[0])


def model_parts(model: Any) -> tuple[Any, Sequence[Any], Any, Any]:
    """(input embedding, decoder blocks, final norm, LM head) of a transformers causal LM."""
    n = getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config,
                "num_hidden_layers", None)
    blocks = None
    for mod in model.modules():
        if type(mod).__name__ == "ModuleList" and len(mod) == n:
            blocks = mod
            break
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    norm = None
    for attr in ("norm", "final_layernorm", "ln_f", "norm_f", "final_layer_norm"):
        norm = getattr(base, attr, None)
        if norm is not None:
            break
    head = model.get_output_embeddings()
    if blocks is None or norm is None or head is None:
        raise CapabilityError(f"cannot find the decoder blocks / final norm / LM head of {type(model).__name__}; "
                              "the latent signals support Llama/Qwen/Mistral/GPT-style models")
    return model.get_input_embeddings(), blocks, norm, head


def _encode(backend: Any, prompt: Prompt, completion: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    tok = backend.tokenizer
    if not getattr(tok, "is_fast", False):
        raise CapabilityError("the latent signals need a fast tokenizer (character offsets)")
    p_ids = backend._ids(prompt)
    enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    return p_ids, list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _residuals(model: Any, ids: list[int], layers: Sequence[int]) -> dict[int, Any]:
    """Run ``ids`` once; the (T, hidden) residual stream after each block in ``layers``."""
    import torch

    emb, blocks, _, _ = model_parts(model)
    want = set(layers)
    got: dict[int, Any] = {}
    hooks = []

    def grab(i: int) -> Any:
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            got[i] = (out[0] if isinstance(out, tuple) else out)[0]
        return hook

    if 0 in want:
        hooks.append(emb.register_forward_hook(grab(0)))
    for i, blk in enumerate(blocks, start=1):
        if i in want:
            hooks.append(blk.register_forward_hook(grab(i)))
    try:
        x = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
        kw: dict[str, Any] = {}
        from thinktwice.lm.hf_decode import logits_kwarg

        name = logits_kwarg(model)
        if name is not None:
            kw[name] = 1  # the head's output is not needed
        model(input_ids=x, use_cache=False, **kw)
    finally:
        for h in hooks:
            h.remove()
    return got


def hidden_states(backend: Any, prompt: Prompt, completion: str, layers: Sequence[int] | None,
                  positions: Sequence[int] | None) -> HiddenStates:
    """See :meth:`thinktwice.lm.hf.HFBackend.hidden_states` (call with the backend's lock held)."""
    n_layers = backend.n_layers
    layers = tuple(range(n_layers + 1)) if layers is None else tuple(int(x) for x in layers)
    if any(not 0 <= x <= n_layers for x in layers):
        raise ConfigError(f"layers must lie in [0, {n_layers}], got {layers}")
    p_ids, c_ids, _ = _encode(backend, prompt, completion)
    if not c_ids:
        raise ConfigError("the completion is empty: no hidden state to read")
    m = len(c_ids)
    pos = tuple(range(m)) if positions is None else tuple(p % m if p < 0 else p for p in positions)
    if any(not 0 <= p < m for p in pos):
        raise ConfigError(f"positions must lie in [-{m}, {m}), got {positions}")
    got = _residuals(backend.hf_model, p_ids + c_ids, layers)
    idx = [len(p_ids) + p for p in pos]
    states = np.stack([got[x][idx].float().cpu().numpy() for x in layers])
    return HiddenStates(states, layers, pos, m, len(p_ids) + m)


def token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the token whose character span covers ``char`` (the first one starting after it if none)."""
    for i, (a, b) in enumerate(offsets):
        if a <= char < b:
            return i
    for i, (a, _) in enumerate(offsets):
        if a >= char:
            return i
    raise ConfigError(f"character offset {char} lies past the completion's tokens")


def logit_lens(backend: Any, prompt: Prompt, completion: str, char_offset: int) -> LensResult:
    """See :meth:`thinktwice.lm.hf.HFBackend.logit_lens` (call with the backend's lock held)."""
    import torch

    model = backend.hf_model
    n_layers = backend.n_layers
    p_ids, c_ids, offsets = _encode(backend, prompt, completion)
    j = token_at(offsets, char_offset)
    ids = p_ids + c_ids
    at = len(p_ids) + j - 1  # the position whose output predicts token j
    if at < 0:
        raise ConfigError("the answer token is the very first token: nothing predicts it")
    got = _residuals(model, ids[: at + 1], range(1, n_layers + 1))
    _, _, norm, head = model_parts(model)
    h = torch.stack([got[x][at] for x in range(1, n_layers + 1)])  # (L, hidden)
    logits = head(norm(h.unsqueeze(0)))[0].float()  # (L, V)
    lp = torch.log_softmax(logits, dim=-1)
    target = ids[at + 1]
    return LensResult(logits.argmax(-1).cpu().numpy(), lp[:, target].cpu().numpy(), int(target), j, at + 1)
