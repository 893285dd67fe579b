"""Direct preference optimisation of the organism on (question, chosen, rejected) triples.

DPO (Rafailov et al., arXiv 2305.18290): minimise
``-log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))`` over completion tokens,
with the reference frozen at the starting checkpoint and ``beta = 0.1``. A few dozen lines of torch
instead of TRL, because the organism is not a transformers model.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from typing import Any

from thinktwice.errors import ConfigError

__all__ = ["dpo", "preference_pairs"]

log = logging.getLogger(__name__)


def preference_pairs(questions: list[str], groups: list[list[Any]], *, per_problem: int = 2, seed: int = 0
                     ) -> list[tuple[str, str, str]]:
    """(question, correct sample, incorrect sample) triples from scored sample groups (``.text``,
    ``.correct``), at most ``per_problem`` per question, distinct texts only."""
    rng = random.Random(f"pairs/{seed}")
    out = []
    for q, g in zip(questions, groups, strict=True):
        good = list(dict.fromkeys(s.text for s in g if s.correct))
        bad = list(dict.fromkeys(s.text for s in g if not s.answer_correct))
        rng.shuffle(good)
        rng.shuffle(bad)
        for c, r in list(zip(good, bad))[:per_problem]:
            out.append((q, c, r))
    return out


def _batch_logps(model: Any, tok: Any, items: list[tuple[str, str]], device: str) -> Any:
    import torch

    from thinktwice.organism.train import prompt_ids

    seqs, masks = [], []
    for q, c in items:
        qi = prompt_ids(tok, q)
        ci = tok.encode(c.strip()) + [tok.eos_id]
        ids = (qi + ci)[: model.cfg.block_size + 1]
        seqs.append(ids)
        masks.append(([0] * len(qi) + [1] * len(ci))[: len(ids)])
    T = max(len(s) for s in seqs)
    x = torch.full((len(seqs), T), tok.eos_id, dtype=torch.long)
    m = torch.zeros((len(seqs), T))
    for i, (s, mk) in enumerate(zip(seqs, masks, strict=True)):
        x[i, : len(s)] = torch.tensor(s)
        m[i, : len(mk)] = torch.tensor(mk, dtype=torch.float)
    x, m = x.to(device), m.to(device)
    logits = model(x[:, :-1]).float()
    lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return (lp * m[:, 1:]).sum(-1)


def dpo(ckpt: Any, triples: list[tuple[str, str, str]], *, steps: int = 40, beta: float = 0.1, lr: float = 1e-4,
        batch_size: int = 8, seed: int = 0, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A DPO-tuned copy of ``ckpt`` (the reference is ``ckpt`` itself); returns it and a summary
    (final loss, reward margin, preference accuracy on the last batch, seconds)."""
    import torch

    from thinktwice.organism.checkpoint import Checkpoint

    if not triples:
        raise ConfigError("dpo needs at least one (question, chosen, rejected) triple")
    if steps < 1 or batch_size < 1 or beta <= 0:
        raise ConfigError("steps, batch_size >= 1 and beta > 0 are required")
    torch.manual_seed(seed)
    rng = random.Random(f"dpo/{seed}")
    ref = ckpt.model.to(device).eval()
    policy = copy.deepcopy(ckpt.model).to(device).train()
    tok = ckpt.tokenizer
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    loss_v = margin = acc = float("nan")
    for _ in range(steps):
        batch = [triples[rng.randrange(len(triples))] for _ in range(batch_size)]
        items = [(q, c) for q, c, _ in batch] + [(q, r) for q, _, r in batch]
        with torch.no_grad():
            ref_lp = _batch_logps(ref, tok, items, device)
        pol_lp = _batch_logps(policy, tok, items, device)
        n = len(batch)
        z = beta * ((pol_lp[:n] - ref_lp[:n]) - (pol_lp[n:] - ref_lp[n:]))
        loss = -torch.nn.functional.logsigmoid(z).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        loss_v, margin, acc = float(loss.item()), float(z.mean().item() / beta), float((z > 0).float().mean().item())
    policy.eval().to("cpu")
    summary = {"loss": loss_v, "reward_margin": margin, "pref_accuracy": acc, "steps": steps, "beta": beta,
               "lr": lr, "pairs": len(triples), "seconds": round(time.perf_counter() - t0, 1)}
    meta = {**ckpt.meta, "dpo": summary}
    return Checkpoint(policy, tok, meta), summary
