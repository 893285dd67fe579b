"""SFT and DPO of a local Hugging Face model with LoRA adapters, through TRL and PEFT.

SFT uses TRL's ``SFTTrainer`` (prompt/completion records: loss on the completion only; or
``messages`` records through the tokenizer's chat template); DPO uses ``DPOTrainer`` (Rafailov et
al., arXiv 2305.18290) on prompt/chosen/rejected records, with the frozen base as the implicit
reference of the LoRA policy. LoRA: Hu et al., arXiv 2106.09685. Everything is read from local
files (``HF_HUB_OFFLINE=1``); heavy imports happen inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinktwice.errors import ConfigError, DataError
from thinktwice.train.formats import read_jsonl

__all__ = ["HFTrainConfig", "train_dpo", "train_sft"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFTrainConfig:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    beta: float = 0.1  # DPO
    seed: int = 0
    logging_steps: int = 1
    gradient_checkpointing: bool = True  # TRL's default: less activation memory, slower steps

    def __post_init__(self) -> None:
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("need lora_r >= 1, lora_alpha >= 1 and 0 <= lora_dropout < 1")
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.beta <= 0:
            raise ConfigError("epochs, lr, beta must be > 0; batch_size, grad_accum >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError("max_steps must be -1 (use epochs) or >= 1")


def _load(model_path: str | Path) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(model_path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"no Hugging Face model at {p} (a directory with config.json is needed; nothing is downloaded)")
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
    return model, tok


def _lora(cfg: HFTrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      task_type="CAUSAL_LM", target_modules="all-linear")


def _dataset(path: str | Path, kinds: tuple[str, ...], tok: Any) -> Any:
    from datasets import Dataset  # type: ignore[import-untyped]

    recs = read_jsonl(path, kinds)
    shapes = {tuple(sorted(k for k in r if k != "meta")) for r in recs}
    if len(shapes) > 1:
        raise DataError(f"{path}: records mix shapes {sorted(shapes)}; use one format per file")
    if "messages" in recs[0] and not getattr(tok, "chat_template", None):
        raise DataError(f"{path}: conversational records need a tokenizer with a chat template")
    return Dataset.from_list([{k: v for k, v in r.items() if k != "meta"} for r in recs])


def _common(cfg: HFTrainConfig, out: Path) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {"output_dir": str(out), "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps, "learning_rate": cfg.lr,
            "per_device_train_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "logging_steps": cfg.logging_steps, "save_strategy": "no", "report_to": "none", "seed": cfg.seed,
            "use_cpu": not cuda, "bf16": cuda, "disable_tqdm": True,
            "gradient_checkpointing": cfg.gradient_checkpointing}


def _finish(trainer: Any, out: Path, t0: float, kind: str, n: int) -> dict[str, Any]:
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log lines; stdout is for results
        res = trainer.train()
    trainer.save_model(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    loss = float(losses[-1]) if losses else float(res.training_loss)
    if not math.isfinite(loss):
        raise ConfigError(f"{kind} training diverged (loss {loss}); lower --lr")
    summary = {"kind": kind, "records": n, "steps": int(trainer.state.global_step), "loss": loss,
               "first_loss": float(losses[0]) if losses else loss, "seconds": round(time.perf_counter() - t0, 1),
               "out": str(out)}
    log.info("%s done: %s", kind, summary)
    return summary


def train_sft(model_path: str | Path, data: str | Path, out: str | Path, cfg: HFTrainConfig | None = None
              ) -> dict[str, Any]:
    """LoRA SFT of the model at ``model_path`` on ``data`` (prompt/completion or messages JSONL); the
    adapter is saved in ``out``. Returns a summary (steps, last logged loss, seconds)."""
    cfg = cfg or HFTrainConfig()
    model, tok = _load(model_path)
    ds = _dataset(data, ("sft", "messages"), tok)
    from trl import SFTConfig, SFTTrainer

    out = Path(out)
    t0 = time.perf_counter()
    args = SFTConfig(**_common(cfg, out), max_length=cfg.max_length)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=_lora(cfg))
    return _finish(trainer, out, t0, "sft", len(ds))


def train_dpo(model_path: str | Path, data: str | Path, out: str | Path, cfg: HFTrainConfig | None = None
              ) -> dict[str, Any]:
    """LoRA DPO of the model at ``model_path`` on prompt/chosen/rejected JSONL (``beta`` from ``cfg``); the
    adapter is saved in ``out``."""
    cfg = cfg or HFTrainConfig()
    model, tok = _load(model_path)
    ds = _dataset(data, ("dpo",), tok)
    from trl import DPOConfig, DPOTrainer

    out = Path(out)
    t0 = time.perf_counter()
    args = DPOConfig(**_common(cfg, out), beta=cfg.beta, max_length=cfg.max_length)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=_lora(cfg))
    return _finish(trainer, out, t0, "dpo", len(ds))
