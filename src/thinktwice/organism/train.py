"""Training the organism from scratch on a seeded stream of arithmetic problems.

Each training document is ``<eos> question \\n solution <eos>`` with the solution written in a
randomly chosen valid order (see :mod:`thinktwice.organism.arith`); documents are packed whole
into rows of ``block_size`` tokens and the loss covers only solution tokens. The stream comes from
the train split, so no test question is ever seen. Same config and seed -> same checkpoint on the
same machine (deterministic algorithms, one thread order, a seeded data stream).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from thinktwice.errors import ConfigError
from thinktwice.organism import arith
from thinktwice.organism.checkpoint import Checkpoint, save
from thinktwice.organism.generate import generate
from thinktwice.organism.model import GPT
from thinktwice.organism.presets import TrainConfig
from thinktwice.organism.tokenizer import Tokenizer

__all__ = ["batches", "finetune", "greedy_accuracy", "make_tokenizer", "prompt_ids", "train"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict[str, float]], None]
"""Called as ``progress(step, total_steps, {"loss": ..., "lr": ...})``."""


def make_tokenizer() -> Tokenizer:
    return Tokenizer(arith.WORDS)


def prompt_ids(tok: Tokenizer, question: str) -> list[int]:
    """How a question is shown to the organism: ``<eos>`` (start of document), the text, a newline."""
    return [tok.eos_id, *tok.encode(question.strip() + "\n")]


def _documents(cfg: TrainConfig, tok: Tokenizer) -> Iterator[tuple[list[int], list[int]]]:
    """(ids, loss mask) per training document, forever."""
    rng = random.Random(f"organism-train/{cfg.seed}")
    plain = arith.generate(cfg.seed, arith.Difficulty(steps=cfg.train_max_steps, min_steps=cfg.train_min_steps),
                           split="train")
    noisy = arith.generate(cfg.seed + 1, arith.Difficulty(steps=cfg.train_max_steps,
                                                           min_steps=cfg.train_min_steps, distractors=1),
                           split="train")
    while True:
        p = next(noisy) if rng.random() < cfg.distractor_prob else next(plain)
        q = prompt_ids(tok, p.question)
        a = tok.encode(p.solution(rng.choice(arith.ORDERS))) + [tok.eos_id]
        yield q + a, [0] * len(q) + [1] * len(a)


def batches(cfg: TrainConfig, tok: Tokenizer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) of shape (B, T): inputs and targets, targets -1 where no loss is taken."""
    T = cfg.model.block_size
    docs = _documents(cfg, tok)
    pending = next(docs)
    while True:
        xs, ys = [], []
        for _ in range(cfg.batch_size):
            ids: list[int] = []
            mask: list[int] = []
            while len(ids) + len(pending[0]) <= T + 1:
                ids += pending[0]
                mask += pending[1]
                pending = next(docs)
            if not ids:  # a document longer than a row: cut it
                ids, mask = pending[0][: T + 1], pending[1][: T + 1]
                pending = next(docs)
            pad = T + 1 - len(ids)
            ids += [tok.eos_id] * pad
            mask += [0] * pad
            x = torch.tensor(ids[:-1])
            y = torch.tensor(ids[1:])
            y[torch.tensor(mask[1:]) == 0] = -1
            xs.append(x)
            ys.append(y)
        yield torch.stack(xs), torch.stack(ys)


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def greedy_accuracy(model: GPT, tok: Tokenizer, n: int = 100, seed: int = 0,
                    difficulty: arith.Difficulty | None = None) -> float:
    """Greedy accuracy on the first ``n`` test problems (a quick check, not the benchmark)."""
    model.eval()
    stream = arith.generate(seed, difficulty, split="test")
    right = 0
    for _ in range(n):
        p = next(stream)
        g = generate(model, tok, prompt_ids(tok, p.question), 1, max_tokens=160, stats=False)[0]
        right += g.text.rsplit("#### ", 1)[-1].strip() == str(p.answer)
    return right / n


def train(cfg: TrainConfig, out: str | Path | None = None, *, device: str = "cpu",
          progress: Progress | None = None, eval_problems: int = 100,
          threads: int | None = None) -> tuple[Checkpoint, dict[str, Any]]:
    """Train a model with ``cfg``; save it under ``out`` (a directory or ``.pt`` file) when given.

    ``threads`` sets torch's CPU threads (process-wide; on a busy machine 1 is much faster than
    threads that spin waiting for cores). Returns the checkpoint and a summary (loss, seconds,
    tokens/s, quick greedy accuracy on held-out problems at the default difficulty).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device == "cpu" or deterministic)
    try:
        return _train(cfg, out, device, progress, eval_problems)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: TrainConfig, out: str | Path | None, device: str, progress: Progress | None,
           eval_problems: int) -> tuple[Checkpoint, dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    tok = make_tokenizer()
    mcfg = cfg.model if cfg.model.vocab_size == tok.size else type(cfg.model)(
        **{**cfg.model.to_dict(), "vocab_size": tok.size})
    model = GPT(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99))
    use_bf16 = device.startswith("cuda")
    data = batches(cfg, tok)
    t0 = time.perf_counter()
    tokens = 0
    ema = None
    model.train()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        x, y = next(data)
        x, y = x.to(device), y.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                 ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tokens += int(x.numel())
        lv = float(loss.item())
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if progress is not None:
            progress(step + 1, cfg.steps, {"loss": ema, "lr": _lr(cfg, step)})
    seconds = time.perf_counter() - t0
    model.eval()
    summary: dict[str, Any] = {
        "loss": ema, "train_seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds),
        "params": model.num_params(), "device": device, "torch": str(torch.__version__),
    }
    if eval_problems:
        summary["greedy_quick"] = greedy_accuracy(model, tok, eval_problems)
    model.to("cpu")
    ckpt = Checkpoint(model, tok, {"train": cfg.to_dict(), "summary": summary})
    if out is not None:
        summary["path"] = str(save(ckpt, out))
    log.info("trained organism: %s", summary)
    return ckpt, summary


def finetune(ckpt: Checkpoint, pairs: list[tuple[str, str]], *, steps: int, lr: float = 3e-4,
             min_lr: float | None = None, batch_size: int = 16, warmup: int = 10, weight_decay: float = 0.0,
             grad_clip: float = 1.0, seed: int = 0, device: str = "cpu",
             progress: Progress | None = None) -> tuple[Checkpoint, dict[str, Any]]:
    """Continue training a copy of ``ckpt`` on ``(question, completion)`` pairs for ``steps`` steps.

    Each pair becomes the document ``<eos> question \\n completion <eos>`` (the completion is the
    worked solution with its ``#### N`` line); documents are shuffled (seeded) and packed whole into
    rows as in :func:`train`, and the loss covers completion tokens only. The learning rate warms up
    over ``warmup`` steps and decays by a cosine to ``min_lr`` (default ``lr / 10``). ``ckpt`` is
    not modified. Returns the new checkpoint (meta records the fine-tune) and a summary.
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError("steps and batch_size must be >= 1")
    if not pairs:
        raise ConfigError("finetune needs at least one (question, completion) pair")
    import copy

    tok = ckpt.tokenizer
    model = copy.deepcopy(ckpt.model).to(device)
    T = model.cfg.block_size
    docs_all = []
    for q, c in pairs:
        qi = prompt_ids(tok, q)
        ci = tok.encode(c.strip()) + [tok.eos_id]
        docs_all.append((qi + ci, [0] * len(qi) + [1] * len(ci)))
    rng = random.Random(f"organism-finetune/{seed}")

    def docs() -> Iterator[tuple[list[int], list[int]]]:
        while True:
            order = list(range(len(docs_all)))
            rng.shuffle(order)
            for i in order:
                yield docs_all[i]

    stream = docs()
    pending = next(stream)
    lo = lr / 10 if min_lr is None else min_lr

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * min(1.0, frac)))

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    model.train()
    t0 = time.perf_counter()
    ema = None
    for step in range(steps):
        xs, ys = [], []
        for _ in range(batch_size):
            ids: list[int] = []
            mask: list[int] = []
            while len(ids) + len(pending[0]) <= T + 1:
                ids += pending[0]
                mask += pending[1]
                pending = next(stream)
            if not ids:
                ids, mask = pending[0][: T + 1], pending[1][: T + 1]
                pending = next(stream)
            pad = T + 1 - len(ids)
            ids = ids + [tok.eos_id] * pad
            mask = mask + [0] * pad
            y = torch.tensor(ids[1:])
            y[torch.tensor(mask[1:]) == 0] = -1
            xs.append(torch.tensor(ids[:-1]))
            ys.append(y)
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                 ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        lv = float(loss.item())
        ema = lv if ema is None else 0.9 * ema + 0.1 * lv
        if progress is not None:
            progress(step + 1, steps, {"loss": ema, "lr": lr_at(step)})
    model.eval().to("cpu")
    summary: dict[str, Any] = {"loss": ema, "steps": steps, "pairs": len(pairs), "lr": lr,
                               "batch_size": batch_size, "seconds": round(time.perf_counter() - t0, 2)}
    meta = {**ckpt.meta, "finetunes": [*ckpt.meta.get("finetunes", []), summary]}
    return Checkpoint(model, tok, meta), summary
